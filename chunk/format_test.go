package chunk

import (
	"bytes"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// goldenIndex is a small index with every kind of entry.
func goldenIndex(tb testing.TB) *Index {
	p := Params{Kind: CDC, Pol: DefaultPolynomial, MinSize: 2 << 10, MaxSize: 16 << 10, AvgBits: 12}
	data := testImage(rand.New(rand.NewPCG(42, 42)), 200<<10)
	return &Index{Params: p, Size: int64(len(data)), Entries: naiveIndex(tb, data, p)}
}

func TestIndexGolden(t *testing.T) {
	x := goldenIndex(t)
	b, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "v1.idx")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding of the golden index changed (%d bytes, golden %d): the format is versioned; bump it or run -update if the change is intended", len(b), len(want))
	}
	y, err := ReadIndexFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if y.Params != x.Params || y.Size != x.Size {
		t.Fatalf("decoded header %v/%d, want %v/%d", y.Params, y.Size, x.Params, x.Size)
	}
	assertEntries(t, y.Entries, x.Entries)
}

func TestDecodeIndexRejects(t *testing.T) {
	good, err := goldenIndex(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"magic", flip(0)},
		{"version", flip(9)},
		{"kind", flip(10)},
		{"size", flip(30)},
		{"entry", flip(headerLen + 3)},
		{"checksum", flip(len(good) - 1)},
		{"truncated", good[:len(good)-40]},
		{"trailing", append(bytes.Clone(good), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeIndex(bytes.NewReader(tc.in))
			if !errors.Is(err, ErrCorruptIndex) {
				t.Fatalf("got %v, want ErrCorruptIndex", err)
			}
		})
	}
}

func TestWriteIndexFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.idx")
	x := goldenIndex(t)
	if err := WriteIndexFile(path, x); err != nil {
		t.Fatal(err)
	}
	// A failing write leaves the previous file intact and no temp files.
	bad := &Index{Params: x.Params, Size: x.Size, Entries: x.Entries}
	if err := WriteIndexFile(filepath.Join(dir, "missing", "b.idx"), bad); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if _, err := ReadIndexFile(path); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d files, want 1", len(ents))
	}
}

func FuzzDecodeIndex(f *testing.F) {
	good, _ := goldenIndex(f).MarshalBinary()
	f.Add(good)
	small, _ := (&Index{Params: Pages(), Size: 5000, Entries: []Entry{
		{Offset: 0, Length: 4096, Zero: true}, {Offset: 4096, Length: 904, ID: Sum([]byte("x"))}}}).MarshalBinary()
	f.Add(small)
	f.Add([]byte(indexMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := DecodeIndex(bytes.NewReader(b))
		if err != nil {
			return
		}
		again, err := x.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("decode then encode changed the bytes")
		}
	})
}
