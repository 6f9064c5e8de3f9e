package migstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// genImage is an image computed from the offset, never stored: one page in
// eight is zero, the others are pseudo-random (incompressible, not zero).
type genImage struct{ length int64 }

func (g genImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= g.length {
		return 0, io.EOF
	}
	n := min(int64(len(p)), g.length-off)
	for i := int64(0); i < n; i += 8 {
		pos := off + i
		if (pos/4096)%8 == 0 {
			binary.LittleEndian.PutUint64(p[i:], 0)
			continue
		}
		x := uint64(pos) + 0x9e3779b97f4a7c15 // splitmix64
		x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
		x = (x ^ x>>27) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(p[i:], x^x>>31)
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

type genSource struct{}

func (genSource) Block(_ string, length int64) (io.ReaderAt, error) { return genImage{length}, nil }

// genStream is a stream of ramSize bytes of RAM in one block, plus a small
// ROM, with QEMU's configuration and footers.
func genStream(ramSize int64) *Stream {
	s := &Stream{
		Config:      &Config{Machine: "pc-i440fx-7.2"},
		RAM:         RAMHeader{SectionID: 2, Version: ramSectionVersion},
		Footers:     true,
		Blocks:      []Block{{Name: "pc.ram", Length: ramSize}, {Name: "pc.bios", Length: 256 << 10}},
		Devices:     fakeDevices(true),
		Description: []byte(`{"page_size": 4096}`),
	}
	s.Layout = CanonicalLayout(s.Blocks, s.PageSize())
	return s
}

type discardSink struct{}

func (discardSink) Block(string, int64) (io.WriterAt, error) { return discardWriter{}, nil }

type discardWriter struct{}

func (discardWriter) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

var benchSizes = []int64{16 << 20, 256 << 20}

func BenchmarkParse(b *testing.B) {
	for _, size := range benchSizes {
		var buf bytes.Buffer
		buf.Grow(int(size + size/64))
		if err := Join(context.Background(), &buf, genStream(size), genSource{}); err != nil {
			b.Fatal(err)
		}
		stream := buf.Bytes()
		b.Run(fmt.Sprintf("discard/%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(b.Context(), bytes.NewReader(stream), discardSink{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		// Into fresh sparse files, as for a new checkpoint: the page cache
		// absorbs the writes, so this measures the write path, not the disk.
		b.Run(fmt.Sprintf("dir/%dMiB", size>>20), func(b *testing.B) {
			base := b.TempDir()
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				dir := filepath.Join(base, strconv.Itoa(i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					b.Fatal(err)
				}
				sink := NewDirSink(dir)
				if _, err := Parse(b.Context(), bytes.NewReader(stream), sink); err != nil {
					b.Fatal(err)
				}
				if err := sink.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkJoin(b *testing.B) {
	for _, size := range benchSizes {
		s := genStream(size)
		// Dense images in memory, as a page cache would serve them.
		src := memReaders{}
		var n int64
		for _, blk := range s.Blocks {
			img := make([]byte, blk.Length)
			genImage{blk.Length}.ReadAt(img, 0)
			src[blk.Name] = bytes.NewReader(img)
		}
		cw := &countingWriter{}
		if err := Join(context.Background(), cw, s, src); err != nil {
			b.Fatal(err)
		}
		n = cw.n
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			for b.Loop() {
				if err := Join(b.Context(), io.Discard, s, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type memReaders map[string]*bytes.Reader

func (m memReaders) Block(name string, _ int64) (io.ReaderAt, error) { return m[name], nil }

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// Join streams into Parse through a pipe, and neither holds the RAM: a
// 128 MiB guest costs a few hundred KiB of heap.
func TestBoundedMemory(t *testing.T) {
	s := genStream(128 << 20)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- pw.CloseWithError(Join(t.Context(), pw, s, genSource{})) }()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got, err := Parse(t.Context(), pr, discardSink{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.Stats.Pages+got.Stats.Zeros != (128<<20+256<<10)/4096 {
		t.Errorf("stats %+v", got.Stats)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("Join and Parse of a 128 MiB guest allocated %d bytes", alloc)
	}
}
