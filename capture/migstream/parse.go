package migstream

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"

	"github.com/ntc-project/ntc/internal/zero"
)

// Parse reads a migration stream from r in one pass, writes each RAM page
// to the block writers sink returns, and returns the rest of the stream. It
// holds at most a few hundred KiB of the input at once, plus the device
// state (bounded by MaxDeviceState) and the layout (a few runs per block,
// at most one per record). A nil sink discards the pages.
//
// Errors are *ParseError values wrapping ErrNotStream, ErrVersion,
// ErrTruncated, ErrUnsupported, ErrMalformed or ErrTooLarge, or the error
// of r or of the sink. ctx is checked between records; to interrupt a read
// that blocks, close r.
func Parse(ctx context.Context, r io.Reader, sink Sink) (*Stream, error) {
	p := &parser{ctx: ctx, r: newReader(r), sink: sink, last: -1}
	if err := p.parse(); err != nil {
		return nil, &ParseError{Offset: p.r.off, Err: err}
	}
	return &p.s, nil
}

type parser struct {
	ctx  context.Context
	r    *reader
	sink Sink
	s    Stream

	ps     int64 // target page size
	mask   uint64
	blocks []blockState
	index  map[string]int
	last   int // block of the previous record, -1 before the first
	nrec   int // records read, for cancellation checks
}

type blockState struct {
	w    io.WriterAt
	zw   ZeroWriterAt
	sent pageSet
}

func (p *parser) parse() error {
	magic, err := p.r.u32()
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if magic != fileMagic {
		return fmt.Errorf("magic %#08x, want %#08x (\"QEVM\"): %w", magic, fileMagic, ErrNotStream)
	}
	version, err := p.r.u32()
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if version != fileVersion {
		return fmt.Errorf("file format version %d, want %d: %w", version, fileVersion, ErrVersion)
	}
	if t, err := p.r.peekByte(); err != nil {
		return fmt.Errorf("header: %w", err)
	} else if t == secConfiguration {
		p.r.next(1)
		if p.s.Config, err = readConfig(p.r); err != nil {
			return fmt.Errorf("configuration section: %w", err)
		}
	}
	p.ps = p.s.PageSize()
	p.mask = uint64(p.ps - 1)

	for {
		t, err := p.r.peekByte()
		if err != nil {
			return fmt.Errorf("section header: %w", err)
		}
		switch t {
		case secStart:
			if err := p.ramStart(); err != nil {
				return err
			}
		case secPart, secEnd:
			if err := p.ramPart(SectionType(t)); err != nil {
				return err
			}
		case secFull, secEOF:
			return p.devices()
		case secCommand:
			return fmt.Errorf("command section (postcopy): %w", ErrUnsupported)
		default:
			return fmt.Errorf("section type %#x before the device state: %w", t, ErrMalformed)
		}
	}
}

func (p *parser) ramStart() error {
	p.r.next(1)
	var h RAMHeader
	var err error
	if h.SectionID, err = p.r.u32(); err != nil {
		return fmt.Errorf("section header: %w", err)
	}
	name, err := p.r.str8()
	if err != nil {
		return fmt.Errorf("section header: %w", err)
	}
	if name != ramSectionName {
		return fmt.Errorf("iterative section %q (only RAM is supported: no block migration, dirty bitmaps or VFIO): %w", name, ErrUnsupported)
	}
	if p.index != nil {
		return fmt.Errorf("second RAM START section: %w", ErrMalformed)
	}
	if h.InstanceID, err = p.r.u32(); err != nil {
		return fmt.Errorf("ram section header: %w", err)
	}
	if h.Version, err = p.r.u32(); err != nil {
		return fmt.Errorf("ram section header: %w", err)
	}
	if h.Version != ramSectionVersion {
		return fmt.Errorf("ram section version %d, want %d: %w", h.Version, ramSectionVersion, ErrUnsupported)
	}
	p.s.RAM = h
	if err := p.blockList(); err != nil {
		return fmt.Errorf("ram section 0 (START): %w", err)
	}
	p.s.Layout.Sections = append(p.s.Layout.Sections, Section{Type: SectionStart})
	if err := p.records(); err != nil {
		return err
	}
	if t, err := p.r.peekByte(); err == nil && t == secFooter {
		p.s.Footers = true
	}
	return p.footer()
}

// blockList reads the MEM_SIZE record and hands the blocks to the sink.
func (p *parser) blockList() error {
	v, err := p.r.u64()
	if err != nil {
		return fmt.Errorf("block list: %w", err)
	}
	if v&p.mask != flagMemSize {
		return fmt.Errorf("first record has flags %#x, want the block list (%#x): %w", v&p.mask, flagMemSize, ErrMalformed)
	}
	total := v &^ p.mask
	p.index = make(map[string]int)
	shared := p.s.Config.ignoreShared()
	for total > 0 {
		if len(p.s.Blocks) == MaxBlocks {
			return fmt.Errorf("block list: more than %d blocks: %w", MaxBlocks, ErrTooLarge)
		}
		name, err := p.r.str8()
		if err != nil {
			return fmt.Errorf("block list: %w", err)
		}
		length, err := p.r.u64()
		if err != nil {
			return fmt.Errorf("block list: block %q: %w", name, err)
		}
		var addr uint64
		if shared {
			if addr, err = p.r.u64(); err != nil {
				return fmt.Errorf("block list: block %q: %w", name, err)
			}
		}
		switch _, dup := p.index[name]; {
		case name == "":
			return fmt.Errorf("block list: block without a name: %w", ErrMalformed)
		case dup:
			return fmt.Errorf("block list: block %q listed twice: %w", name, ErrMalformed)
		case length > MaxBlockLength:
			return fmt.Errorf("block list: block %q of %d bytes (limit %d): %w", name, length, int64(MaxBlockLength), ErrTooLarge)
		case length&p.mask != 0:
			return fmt.Errorf("block list: block %q length %#x is not a multiple of the page size %#x: %w", name, length, p.ps, ErrMalformed)
		case length > total:
			return fmt.Errorf("block list: block %q length %#x exceeds the %#x bytes left of the total: %w", name, length, total, ErrMalformed)
		}
		total -= length
		p.index[name] = len(p.s.Blocks)
		p.s.Blocks = append(p.s.Blocks, Block{Name: name, Length: int64(length), Addr: addr})
	}
	p.blocks = make([]blockState, len(p.s.Blocks))
	if p.sink == nil {
		return nil
	}
	for i, b := range p.s.Blocks {
		w, err := p.sink.Block(b.Name, b.Length)
		if err != nil {
			return fmt.Errorf("sink: block %q: %w", b.Name, err)
		}
		p.blocks[i].w = w
		p.blocks[i].zw, _ = w.(ZeroWriterAt)
	}
	return nil
}

func (p *parser) ramPart(t SectionType) error {
	p.r.next(1)
	id, err := p.r.u32()
	if err != nil {
		return fmt.Errorf("section header: %w", err)
	}
	if p.index == nil || id != p.s.RAM.SectionID {
		return fmt.Errorf("%s section for section id %d, which has no START section: %w", t, id, ErrMalformed)
	}
	p.s.Layout.Sections = append(p.s.Layout.Sections, Section{Type: t})
	if err := p.records(); err != nil {
		return err
	}
	return p.footer()
}

func (p *parser) footer() error {
	if !p.s.Footers {
		return nil
	}
	sec := len(p.s.Layout.Sections) - 1
	t, err := p.r.u8()
	if err != nil {
		return fmt.Errorf("ram section %d: footer: %w", sec, err)
	}
	if t != secFooter {
		return fmt.Errorf("ram section %d: byte %#x where the section footer belongs: %w", sec, t, ErrMalformed)
	}
	id, err := p.r.u32()
	if err != nil {
		return fmt.Errorf("ram section %d: footer: %w", sec, err)
	}
	if id != p.s.RAM.SectionID {
		return fmt.Errorf("ram section %d: footer for section id %d, want %d: %w", sec, id, p.s.RAM.SectionID, ErrMalformed)
	}
	return nil
}

// records reads RAM records up to and including the end-of-section record,
// into the last section of the layout.
func (p *parser) records() error {
	secIdx := len(p.s.Layout.Sections) - 1
	sec := &p.s.Layout.Sections[secIdx]
	for {
		if p.nrec++; p.nrec%4096 == 0 {
			if err := p.ctx.Err(); err != nil {
				return err
			}
		}
		v, err := p.r.u64()
		if err != nil {
			return fmt.Errorf("ram section %d (%s): record: %w", secIdx, sec.Type, err)
		}
		flags, addr := v&p.mask, v&^p.mask
		if flags == flagEOS && addr == 0 {
			return nil
		}
		if err := p.record(sec, flags, addr); err != nil {
			return fmt.Errorf("ram section %d (%s): %w", secIdx, sec.Type, err)
		}
	}
}

func (p *parser) record(sec *Section, flags, addr uint64) error {
	switch flags &^ flagContinue {
	case flagZero, flagPage:
	case flagXBZRLE:
		return fmt.Errorf("offset %#x: xbzrle page (capability xbzrle): %w", addr, ErrUnsupported)
	case flagCompressPage:
		return fmt.Errorf("offset %#x: compressed page (capability compress): %w", addr, ErrUnsupported)
	case flagHook:
		return fmt.Errorf("offset %#x: RDMA hook (rdma: migration): %w", addr, ErrUnsupported)
	case flagMultifdFlush:
		return fmt.Errorf("offset %#x: multifd flush (capability multifd): %w", addr, ErrUnsupported)
	case flagMemSize:
		return fmt.Errorf("block list outside the START section: %w", ErrMalformed)
	default:
		return fmt.Errorf("offset %#x: unknown record flags %#x: %w", addr, flags, ErrMalformed)
	}
	named := flags&flagContinue == 0
	idx := p.last
	if named {
		n, err := p.r.u8()
		if err != nil {
			return fmt.Errorf("offset %#x: block name: %w", addr, err)
		}
		name, err := p.r.next(int(n))
		if err != nil {
			return fmt.Errorf("offset %#x: block name: %w", addr, err)
		}
		var ok bool
		if idx, ok = p.index[string(name)]; !ok {
			return fmt.Errorf("offset %#x: unknown block %q: %w", addr, name, ErrMalformed)
		}
	} else if idx < 0 {
		return fmt.Errorf("offset %#x: CONTINUE record before any named one: %w", addr, ErrMalformed)
	}
	b, st := &p.s.Blocks[idx], &p.blocks[idx]
	if addr >= uint64(b.Length) {
		return fmt.Errorf("block %q offset %#x: beyond the block's length %#x: %w", b.Name, addr, b.Length, ErrMalformed)
	}
	off := int64(addr)
	force := false
	if flags&flagZero != 0 {
		fill, err := p.r.u8()
		if err != nil {
			return fmt.Errorf("block %q offset %#x: %w", b.Name, off, err)
		}
		if fill != 0 {
			return fmt.Errorf("block %q offset %#x: zero page with fill byte %#x: %w", b.Name, off, fill, ErrUnsupported)
		}
		p.s.Stats.Zeros++
		if err := st.writeZero(off, p.ps); err != nil {
			return fmt.Errorf("block %q offset %#x: write: %w", b.Name, off, err)
		}
	} else {
		data, err := p.r.next(int(p.ps))
		if err != nil {
			return fmt.Errorf("block %q offset %#x: page: %w", b.Name, off, err)
		}
		p.s.Stats.Pages++
		force = zero.Is(data)
		if st.w != nil {
			if _, err := st.w.WriteAt(data, off); err != nil {
				return fmt.Errorf("block %q offset %#x: write: %w", b.Name, off, err)
			}
		}
	}
	page := off / p.ps
	if st.sent.add(page) {
		p.s.Stats.Resent++
	}
	p.last = idx
	if n := len(sec.Runs); n > 0 && !named {
		if r := &sec.Runs[n-1]; r.Block == idx && r.Page+r.Count == page && r.ForcePage == force {
			r.Count++
			return nil
		}
	}
	sec.Runs = append(sec.Runs, Run{Block: idx, Page: page, Count: 1, Named: named, ForcePage: force})
	return nil
}

func (st *blockState) writeZero(off, n int64) error {
	switch {
	case st.zw != nil:
		return st.zw.WriteZeroAt(off, n)
	case st.w != nil:
		_, err := st.w.WriteAt(zeroPage[:n], off)
		return err
	}
	return nil
}

// devices reads the rest of the stream: the device state and the
// VMDESCRIPTION.
func (p *parser) devices() error {
	blob, err := p.r.rest(MaxDeviceState)
	if err != nil {
		return fmt.Errorf("device state: %w", err)
	}
	p.s.Devices, p.s.Description = splitDescription(blob)
	if p.s.Description == nil {
		return fmt.Errorf("device state: %d bytes without the VMDESCRIPTION that ends every stream: %w", len(blob), ErrTruncated)
	}
	for i, b := range p.s.Blocks {
		p.s.Stats.Unsent += b.Length/p.ps - p.blocks[i].sent.n
	}
	return nil
}

// splitDescription finds the VMDESCRIPTION that QEMU appends after the EOF
// marker: 0x00, 0x06, be32 length, then that many bytes of JSON up to the
// end of the stream. Device sections have no length, so the description is
// found from its own framing, as QEMU's analyze-migration.py does.
func splitDescription(b []byte) (devices, desc []byte) {
	for i := 1; i+5 <= len(b); i++ {
		if b[i] != secVMDescription || b[i-1] != secEOF {
			continue
		}
		if int64(binary.BigEndian.Uint32(b[i+1:])) != int64(len(b)-i-5) {
			continue
		}
		if d := b[i+5:]; json.Valid(d) {
			return b[:i:i], d
		}
	}
	return b, nil
}
