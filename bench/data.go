package bench

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/ntc-project/ntc/chunk"
)

// The data the scenarios and 'ntc demo' change: images written from a
// seed (the same seed, the same bytes) and rewritten in scattered extents
// as a guest would.

// WriteRandom writes size incompressible bytes to path.
func WriteRandom(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, 11))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		fillRandom(r, buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// WriteMixed writes a sparse image of size bytes to path, as a disk that
// holds some files looks: its last quarter and a quarter of the 1 MiB
// regions before it are holes (never written), a quarter repetitive text
// (log lines), the rest random data.
func WriteMixed(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	r := rand.New(rand.NewPCG(seed, 13))
	buf := make([]byte, 1<<20)
	words := []string{"office", "home", "checkpoint", "resume", "chunk", "guest", "disk", "page"}
	for off := int64(0); off < size*3/4; off += int64(len(buf)) {
		switch r.IntN(4) {
		case 0:
			continue // a hole
		case 1:
			var b strings.Builder
			for b.Len() < len(buf) {
				fmt.Fprintf(&b, "%d %s %s %x\n", r.IntN(1e6), words[r.IntN(len(words))], words[r.IntN(len(words))], r.Uint32())
			}
			copy(buf, b.String())
		default:
			fillRandom(r, buf)
		}
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// fillRandom fills buf from r.
func fillRandom(r *rand.Rand, buf []byte) {
	var v uint64
	for i := range buf {
		if i%8 == 0 {
			v = r.Uint64()
		}
		buf[i] = byte(v >> (8 * (i % 8)))
	}
}

// Extent is a changed byte range.
type Extent = chunk.Range

// RewriteScattered rewrites frac of the file (at least one extent) in
// random extents of n bytes (aligned to n), with fresh random data, and
// returns them and the zstd-compressed size of their new content (the
// oracle).
func RewriteScattered(path string, frac float64, n int64, seed uint64) ([]Extent, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	r := rand.New(rand.NewPCG(seed, 12))
	slots := int(fi.Size() / n)
	if slots == 0 {
		return nil, 0, fmt.Errorf("%s: %d bytes hold no extent of %d", path, fi.Size(), n)
	}
	count := max(1, int(frac*float64(fi.Size())/float64(n)))
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	defer enc.Close()
	var all []byte
	var out []Extent
	buf := make([]byte, n)
	for _, s := range r.Perm(slots)[:min(count, slots)] {
		fillRandom(r, buf)
		off := int64(s) * n
		if _, err := f.WriteAt(buf, off); err != nil {
			return nil, 0, err
		}
		all = append(all, buf...)
		out = append(out, Extent{Off: off, Len: n})
	}
	return out, int64(len(enc.EncodeAll(all, nil))), f.Sync()
}

// Ranges formats extents for --changed.
func Ranges(es []Extent) string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d+%d", e.Off, e.Len)
	}
	return b.String()
}
