package migstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/ntc-project/ntc/internal/zero"
)

// memChunk is the granularity of memImage: the smallest target page.
const memChunk = 1 << minPageBits

// memImage is a sparse in-memory image: only chunks that hold non-zero bytes
// take memory, so a stream declaring huge blocks costs nothing.
type memImage struct {
	length int64
	chunks map[int64][]byte
}

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off%memChunk != 0 || len(p)%memChunk != 0 || off+int64(len(p)) > m.length {
		return 0, fmt.Errorf("memImage: write of %d bytes at %#x into %#x", len(p), off, m.length)
	}
	for i := 0; i < len(p); i += memChunk {
		c := p[i : i+memChunk]
		k := (off + int64(i)) / memChunk
		if zero.Is(c) {
			delete(m.chunks, k)
		} else {
			m.chunks[k] = bytes.Clone(c)
		}
	}
	return len(p), nil
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off%memChunk != 0 || len(p)%memChunk != 0 {
		return 0, fmt.Errorf("memImage: unaligned read of %d bytes at %#x", len(p), off)
	}
	n := 0
	for n < len(p) && off+int64(n) < m.length {
		if c, ok := m.chunks[(off+int64(n))/memChunk]; ok {
			copy(p[n:], c)
		} else {
			clear(p[n : n+memChunk])
		}
		n += memChunk
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// memImages is a Sink and a Source in memory.
type memImages map[string]*memImage

func (m memImages) Block(name string, length int64) (io.WriterAt, error) {
	img := &memImage{length: length, chunks: map[int64][]byte{}}
	m[name] = img
	return img, nil
}

type memSource memImages

func (m memSource) Block(name string, length int64) (io.ReaderAt, error) {
	img, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("no image for block %q", name)
	}
	return img, nil
}

func equalImages(a, b memImages) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok || x.length != y.length || !maps.EqualFunc(x.chunks, y.chunks, bytes.Equal) {
			return false
		}
	}
	return true
}

// synth describes a synthetic stream for tests.
type synth struct {
	config   *Config
	blocks   []Block
	footers  bool
	fill     func(block, page int, p []byte) // page content; nil: random or zero
	layout   func(s *Stream) Layout          // nil: CanonicalLayout
	devices  []byte
	describe string
}

// build returns the stream and its images.
func (sy synth) build(tb testing.TB) (*Stream, memImages) {
	tb.Helper()
	s := &Stream{
		Config:      sy.config,
		RAM:         RAMHeader{SectionID: 2, Version: ramSectionVersion},
		Footers:     sy.footers,
		Blocks:      sy.blocks,
		Devices:     sy.devices,
		Description: []byte(sy.describe),
	}
	if s.Devices == nil {
		s.Devices = fakeDevices(s.Footers)
	}
	if s.Description == nil || len(s.Description) == 0 {
		s.Description = []byte(`{"page_size": 4096, "devices": []}`)
	}
	ps := s.PageSize()
	rng := rand.New(rand.NewPCG(1, uint64(len(sy.blocks))))
	fill := sy.fill
	if fill == nil {
		fill = func(_, page int, p []byte) {
			if page%3 != 0 {
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
			}
		}
	}
	imgs := memImages{}
	page := make([]byte, ps)
	for bi, b := range s.Blocks {
		w, _ := imgs.Block(b.Name, b.Length)
		for pg := int64(0); pg < b.Length/ps; pg++ {
			clear(page)
			fill(bi, int(pg), page)
			if _, err := w.WriteAt(page, pg*ps); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if sy.layout != nil {
		s.Layout = sy.layout(s)
	} else {
		s.Layout = CanonicalLayout(s.Blocks, ps)
	}
	return s, imgs
}

// fakeDevices is a device blob shaped like QEMU's: FULL sections with
// footers, then the EOF marker.
func fakeDevices(footers bool) []byte {
	var b []byte
	for id, name := range []string{"timer", "cpu_common", "apic"} {
		b = append(b, secFull)
		b = appendU32(b, uint32(id+3))
		b = appendStr8(b, name)
		b = appendU32(b, 0)
		b = appendU32(b, 1)
		b = append(b, bytes.Repeat([]byte{byte(id), 0, secSubsection, secEOF}, 7)...)
		if footers {
			b = append(b, secFooter)
			b = appendU32(b, uint32(id+3))
		}
	}
	return append(b, secEOF)
}

func joinBytes(tb testing.TB, s *Stream, src Source) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := Join(context.Background(), &buf, s, src); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func parseBytes(tb testing.TB, b []byte) (*Stream, memImages) {
	tb.Helper()
	imgs := memImages{}
	s, err := Parse(context.Background(), bytes.NewReader(b), imgs)
	if err != nil {
		tb.Fatal(err)
	}
	return s, imgs
}
