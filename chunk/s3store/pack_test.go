package s3store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/chunk"
)

// testPack builds a pack of chunks, compressed where that helps.
func testPack(t testing.TB, chunks [][]byte) ([]byte, []record) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var pack []byte
	var recs []record
	for _, c := range chunks {
		body, codec := chunk.Compress(enc, c, nil, false)
		var r record
		pack, r = appendRecord(pack, chunk.Sum(c), codec, body)
		recs = append(recs, r)
	}
	return pack, recs
}

// TestPackIsLocalPack: a pack object is a valid local pack file: copied
// into a chunk.PackStore's directory, every chunk reads back.
func TestPackIsLocalPack(t *testing.T) {
	chunks := append(randomChunks(10, 5, 9000), []byte{}, bytes.Repeat([]byte("z"), 5000))
	pack, recs := testPack(t, chunks)
	if got := scanPack(pack); len(got) != len(recs) {
		t.Fatalf("scanPack found %d records, want %d", len(got), len(recs))
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "packs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "packs", "pack-000001.dat"), pack, 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := chunk.OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	for i, c := range chunks {
		got, err := ps.Get(t.Context(), chunk.Sum(c))
		if err != nil || !bytes.Equal(got, c) {
			t.Fatalf("chunk %d from the pack as a local pack: %d bytes, %v", i, len(got), err)
		}
	}
}

func TestListingRoundTrip(t *testing.T) {
	pack, recs := testPack(t, randomChunks(11, 4, 3000))
	name := packName(blake3.Sum256(pack))
	b := encodeListing(name, int64(len(pack)), recs)
	gotName, size, got, err := decodeListing(b)
	if err != nil || gotName != name || size != int64(len(pack)) || len(got) != len(recs) {
		t.Fatalf("decode = %s, %d, %d records, %v", gotName, size, len(got), err)
	}
	for i := range recs {
		if got[i] != recs[i] {
			t.Fatalf("record %d: %+v, want %+v", i, got[i], recs[i])
		}
	}
	for _, cut := range []int{0, 10, listHead, len(b) - 1} {
		if _, _, _, err := decodeListing(b[:cut]); err == nil {
			t.Errorf("a listing cut at %d decoded", cut)
		}
	}
	for i := 0; i < len(b); i += 7 {
		bad := bytes.Clone(b)
		bad[i] ^= 1
		if _, _, _, err := decodeListing(bad); err == nil {
			t.Errorf("a listing with byte %d flipped decoded", i)
		}
	}
}

// FuzzDecodeListing: any bytes decode or are refused without panic, every
// record lies within its pack, and what decodes encodes back the same.
func FuzzDecodeListing(f *testing.F) {
	pack, recs := testPack(f, randomChunks(12, 3, 2000))
	f.Add(encodeListing(packName(blake3.Sum256(pack)), int64(len(pack)), recs))
	f.Add(encodeListing(packName{}, 0, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, size, recs, err := decodeListing(b)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.off < recHeaderLen || r.off+int64(r.length) > size {
				t.Fatalf("record %+v outside a pack of %d bytes", r, size)
			}
		}
		if again := encodeListing(name, size, recs); !bytes.Equal(again, b) {
			t.Fatal("decode then encode changed the listing")
		}
	})
}

// FuzzScanPack: any bytes scan without panic into records that lie within
// them, and a pack scans to the records it was built from.
func FuzzScanPack(f *testing.F) {
	pack, _ := testPack(f, randomChunks(13, 3, 2000))
	f.Add(pack)
	f.Add(pack[:len(pack)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		recs := scanPack(b)
		var rebuilt []byte
		for _, r := range recs {
			if r.off < recHeaderLen || r.off+int64(r.length) > int64(len(b)) {
				t.Fatalf("record %+v outside %d bytes", r, len(b))
			}
			var again record
			rebuilt, again = appendRecord(rebuilt, r.id, r.codec, b[r.off:r.off+int64(r.length)])
			if again != r {
				t.Fatalf("record %+v rebuilt as %+v", r, again)
			}
		}
		if !bytes.Equal(rebuilt, b[:len(rebuilt)]) {
			t.Fatal("the records scanned are not the pack's prefix")
		}
	})
}
