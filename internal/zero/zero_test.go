package zero

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// TestIs: one non-zero byte anywhere, in a whole block or the tail, of
// lengths around the block size, is seen.
func TestIs(t *testing.T) {
	for _, n := range []int{0, 1, 7, 63, 64, 65, 4096, 4097, 16 << 10, 16<<10 + 1, 40 << 10} {
		b := make([]byte, n)
		if !Is(b) {
			t.Fatalf("Is(%d zero bytes) = false", n)
		}
		for i := range n {
			b[i] = 0x80
			if Is(b) {
				t.Fatalf("Is(%d bytes, byte %d set) = true", n, i)
			}
			b[i] = 0
		}
	}
}

// bytewise and words are the loops Is replaced (bench's and chunk's
// copies): the baselines it is measured against.
func bytewise(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func words(b []byte) bool {
	for len(b) >= 64 {
		x := binary.LittleEndian.Uint64(b[0:]) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:]) |
			binary.LittleEndian.Uint64(b[32:]) | binary.LittleEndian.Uint64(b[40:]) |
			binary.LittleEndian.Uint64(b[48:]) | binary.LittleEndian.Uint64(b[56:])
		if x != 0 {
			return false
		}
		b = b[64:]
	}
	return bytewise(b)
}

var sink bool

// BenchmarkIs measures Is on all-zero buffers (the whole buffer is read)
// against the loops it replaced, in the same run: compare their MB/s.
func BenchmarkIs(b *testing.B) {
	for _, f := range []struct {
		name string
		fn   func([]byte) bool
	}{{"Is", Is}, {"words", words}, {"bytewise", bytewise}} {
		for _, n := range []int{64, 4 << 10, 1 << 20} {
			buf := make([]byte, n)
			b.Run(fmt.Sprintf("%s/%dB", f.name, n), func(b *testing.B) {
				b.SetBytes(int64(n))
				for b.Loop() {
					sink = f.fn(buf)
				}
			})
		}
	}
}
