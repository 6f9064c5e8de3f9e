package directio

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestBlocks(t *testing.T) {
	a := Align
	tests := []struct {
		off    int64
		n      int
		lo, hi int64
	}{
		{0, int(a), 0, a},
		{0, int(a) - 1, 0, 0},
		{1, int(2 * a), a - 1, 2*a - 1},
		{a, int(3*a) + 5, 0, 3 * a},
		{a - 1, 1, 1, 1},
		{a + 1, 10, a - 1, -1},
	}
	for _, tt := range tests {
		lo, hi := Blocks(tt.off, tt.n)
		if lo != tt.lo || hi != tt.hi {
			t.Errorf("Blocks(%d, %d) = %d, %d; want %d, %d", tt.off, tt.n, lo, hi, tt.lo, tt.hi)
		}
	}
}

// A direct write of aligned memory at an aligned offset lands in the
// file, where the file system offers direct I/O.
func TestDirectWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := Open(path)
	if f == nil {
		t.Skipf("%s offers no direct I/O", filepath.Dir(path))
	}
	defer f.Close()
	b := Bytes(int(2 * Align))
	if !Aligned(b) {
		t.Fatalf("Bytes returned unaligned memory")
	}
	for i := range b {
		b[i] = byte(i * 7)
	}
	if _, err := f.WriteAt(b, Align); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(make([]byte, Align), b...); !bytes.Equal(got, want) {
		t.Fatalf("the file holds %d bytes, not what was written", len(got))
	}
}
