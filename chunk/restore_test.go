package chunk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteImage(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 3<<20)
	for i := range data[:1<<20] {
		data[i] = byte(i * 7 / 5)
	}
	copy(data[2<<20:], bytes.Repeat([]byte("ntc"), 100000))
	st, err := OpenPackStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	x, _, err := Build(ctx, Bytes(data), DefaultCDC(), Options{Chunk: func(e Entry, b []byte) error { return st.Put(ctx, e.ID, b) }})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "out.img")
	f, _ := os.Create(p)
	f.Truncate(x.Size)
	if err := WriteImage(ctx, f, x, st); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, data) {
		t.Fatal("restored image differs")
	}
	// The zero MiB in the middle is a hole, not written blocks.
	var sst syscall.Stat_t
	if err := syscall.Stat(p, &sst); err != nil || sst.Blocks*512 > 2<<20+64<<10 {
		t.Errorf("restored file uses %d bytes on disk: its zeros were written, not left as a hole", sst.Blocks*512)
	}

	// A chunk the store lacks is an error that says where.
	empty, err := OpenPackStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	f, _ = os.Create(p)
	defer f.Close()
	if err := WriteImage(ctx, f, x, empty); !errors.Is(err, ErrChunkMissing) {
		t.Fatalf("missing chunks: %v", err)
	}
}
