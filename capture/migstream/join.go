package migstream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ntc-project/ntc/internal/zero"
)

const (
	writeBufSize = 64 << 10
	// joinChunk is how much of an image Join reads at once.
	joinChunk = 256 << 10
)

// Join writes the migration stream that s and the page images of src
// describe: the RAM sections in the order of s.Layout, then s.Devices and
// s.Description. Each page goes out as a ZERO record when it is all zero and
// the layout does not force a PAGE, else as a PAGE record; a page sent
// more than once goes out with its final content each time. Join reads the
// images in layout order, a chunk at a time, and holds no more than that.
// For a stream whose pages were each sent once, Join(Parse(x)) is x byte for
// byte. A nil src, like a nil image, reads as zeros.
//
// A Stream that Parse did not return can use CanonicalLayout for its
// Layout. Join checks s first and returns an error wrapping ErrInvalid if
// the result would not parse back to s. ctx is checked between chunks.
func Join(ctx context.Context, w io.Writer, s *Stream, src Source) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("join: %w: %w", ErrInvalid, err)
	}
	j := &joiner{ctx: ctx, s: s, ps: s.PageSize(), bw: bufio.NewWriterSize(w, writeBufSize)}
	j.images = make([]io.ReaderAt, len(s.Blocks))
	if src != nil && len(s.Layout.Sections) > 0 {
		for i, b := range s.Blocks {
			img, err := src.Block(b.Name, b.Length)
			if err != nil {
				return fmt.Errorf("join: source: block %q: %w", b.Name, err)
			}
			j.images[i] = img
		}
	}
	if err := j.join(); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	return nil
}

type joiner struct {
	ctx    context.Context
	s      *Stream
	ps     int64
	bw     *bufio.Writer
	images []io.ReaderAt
	buf    []byte // a chunk of an image
	hdr    []byte // a record header
}

func (j *joiner) join() error {
	s := j.s
	b := appendU32(nil, fileMagic)
	b = appendU32(b, fileVersion)
	if s.Config != nil {
		b = append(b, secConfiguration)
		b = appendConfig(b, s.Config)
	}
	if _, err := j.bw.Write(b); err != nil {
		return err
	}
	for i, sec := range s.Layout.Sections {
		if err := j.section(sec); err != nil {
			return fmt.Errorf("ram section %d (%s): %w", i, sec.Type, err)
		}
	}
	if _, err := j.bw.Write(s.Devices); err != nil {
		return err
	}
	b = append(b[:0], secVMDescription)
	b = appendU32(b, uint32(len(s.Description)))
	if _, err := j.bw.Write(b); err != nil {
		return err
	}
	if _, err := j.bw.Write(s.Description); err != nil {
		return err
	}
	return j.bw.Flush()
}

func (j *joiner) section(sec Section) error {
	s := j.s
	b := append(j.hdr[:0], byte(sec.Type))
	b = appendU32(b, s.RAM.SectionID)
	if sec.Type == SectionStart {
		b = appendStr8(b, ramSectionName)
		b = appendU32(b, s.RAM.InstanceID)
		b = appendU32(b, s.RAM.Version)
		var total uint64
		for _, blk := range s.Blocks {
			total += uint64(blk.Length)
		}
		b = appendU64(b, total|flagMemSize)
		shared := s.Config.ignoreShared()
		for _, blk := range s.Blocks {
			b = appendStr8(b, blk.Name)
			b = appendU64(b, uint64(blk.Length))
			if shared {
				b = appendU64(b, blk.Addr)
			}
		}
	}
	j.hdr = b
	if _, err := j.bw.Write(b); err != nil {
		return err
	}
	for _, r := range sec.Runs {
		if err := j.run(r); err != nil {
			return fmt.Errorf("block %q page %d: %w", s.Blocks[r.Block].Name, r.Page, err)
		}
	}
	b = appendU64(j.hdr[:0], flagEOS)
	if s.Footers {
		b = append(b, secFooter)
		b = appendU32(b, s.RAM.SectionID)
	}
	j.hdr = b
	_, err := j.bw.Write(b)
	return err
}

func (j *joiner) run(r Run) error {
	ps := j.ps
	name := j.s.Blocks[r.Block].Name
	img := j.images[r.Block]
	if want := min(max(joinChunk/ps, 1), r.Count) * ps; int64(len(j.buf)) < want {
		j.buf = make([]byte, want)
	}
	chunkPages := int64(len(j.buf)) / ps
	for done := int64(0); done < r.Count; {
		if err := j.ctx.Err(); err != nil {
			return err
		}
		n := min(chunkPages, r.Count-done)
		off := (r.Page + done) * ps
		buf := j.buf[:n*ps]
		if err := readImage(img, buf, off); err != nil {
			return err
		}
		for k := range n {
			p := buf[k*ps : (k+1)*ps]
			blank := !r.ForcePage && zero.Is(p)
			flags := uint64(flagPage)
			if blank {
				flags = flagZero
			}
			named := r.Named && done == 0 && k == 0
			if !named {
				flags |= flagContinue
			}
			h := appendU64(j.hdr[:0], uint64(off+k*ps)|flags)
			if named {
				h = appendStr8(h, name)
			}
			if blank {
				h = append(h, 0)
			}
			j.hdr = h
			if _, err := j.bw.Write(h); err != nil {
				return err
			}
			if !blank {
				if _, err := j.bw.Write(p); err != nil {
					return err
				}
			}
		}
		done += n
	}
	return nil
}

// readImage fills buf from img at off; a nil image reads as zeros.
func readImage(img io.ReaderAt, buf []byte, off int64) error {
	if img == nil {
		clear(buf)
		return nil
	}
	n, err := img.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("image ends at %#x, before the block does: %w", off+int64(n), io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read image at %#x: %w", off+int64(n), err)
}

// check reports what in s Join could not write so that Parse reads it back
// equal.
func (s *Stream) check() error {
	if s.Config != nil {
		if err := s.Config.check(); err != nil {
			return fmt.Errorf("configuration: %w", err)
		}
	}
	ps := s.PageSize()
	if len(s.Layout.Sections) == 0 {
		if len(s.Blocks) > 0 || s.RAM != (RAMHeader{}) || s.Footers {
			return errors.New("RAM blocks or header but no RAM sections in the layout")
		}
	} else if s.RAM.Version != ramSectionVersion {
		return fmt.Errorf("ram section version %d, want %d", s.RAM.Version, ramSectionVersion)
	}
	if len(s.Blocks) > MaxBlocks {
		return fmt.Errorf("%d blocks (limit %d)", len(s.Blocks), MaxBlocks)
	}
	shared := s.Config.ignoreShared()
	names := make(map[string]bool, len(s.Blocks))
	for _, b := range s.Blocks {
		switch {
		case b.Name == "" || len(b.Name) > 255:
			return fmt.Errorf("block name %q: want 1 to 255 bytes", b.Name)
		case names[b.Name]:
			return fmt.Errorf("block %q listed twice", b.Name)
		case b.Length < 0 || b.Length > MaxBlockLength || b.Length%ps != 0:
			return fmt.Errorf("block %q length %#x: want a multiple of the page size %#x up to %#x", b.Name, b.Length, ps, int64(MaxBlockLength))
		case b.Addr != 0 && !shared:
			return fmt.Errorf("block %q has an address but the stream lacks capability %s", b.Name, capIgnoreShared)
		}
		names[b.Name] = true
	}
	if n := len(s.Blocks); n > 0 && s.Blocks[n-1].Length == 0 {
		return fmt.Errorf("last block %q is empty: the block list would end before it", s.Blocks[n-1].Name)
	}
	last := -1
	for i, sec := range s.Layout.Sections {
		switch {
		case i == 0 && sec.Type != SectionStart:
			return fmt.Errorf("layout section 0 is %s, want START", sec.Type)
		case i > 0 && sec.Type != SectionPart && sec.Type != SectionEnd:
			return fmt.Errorf("layout section %d is %s, want PART or END", i, sec.Type)
		}
		for _, r := range sec.Runs {
			if r.Block < 0 || r.Block >= len(s.Blocks) {
				return fmt.Errorf("layout section %d: run for block %d of %d", i, r.Block, len(s.Blocks))
			}
			if n := s.Blocks[r.Block].Length / ps; r.Count < 1 || r.Page < 0 || r.Page > n-r.Count {
				return fmt.Errorf("layout section %d: run of %d pages from page %d in block %q of %d pages", i, r.Count, r.Page, s.Blocks[r.Block].Name, n)
			}
			if !r.Named && r.Block != last {
				return fmt.Errorf("layout section %d: unnamed run for block %q follows block %d", i, s.Blocks[r.Block].Name, last)
			}
			last = r.Block
		}
	}
	switch {
	case len(s.Devices) == 0:
		return errors.New("no device state (it ends with the EOF marker)")
	case len(s.Devices) > MaxDeviceState:
		return fmt.Errorf("device state of %d bytes (limit %d)", len(s.Devices), MaxDeviceState)
	case s.Devices[0] != secFull && s.Devices[0] != secEOF:
		return fmt.Errorf("device state starts with %#x, want a FULL section or EOF", s.Devices[0])
	}
	if s.Devices[len(s.Devices)-1] != secEOF {
		return errors.New("device state does not end with the EOF marker")
	}
	if !json.Valid(s.Description) || len(s.Devices)+5+len(s.Description) > MaxDeviceState {
		return errors.New("description is not JSON or too large")
	}
	return nil
}
