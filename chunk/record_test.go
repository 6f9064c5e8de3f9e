package chunk_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/ntc-project/ntc/chunk"
)

func TestCompressDecompress(t *testing.T) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("compressible "), 500)
	for _, tc := range []struct {
		name      string
		data, pre []byte
		raw       bool
		codec     uint8
	}{
		{"compresses", text, nil, false, chunk.CodecZstd},
		{"known raw", text, nil, true, chunk.CodecRaw},
		{"given compressed", text, enc.EncodeAll(text, nil), false, chunk.CodecZstd},
		{"empty", []byte{}, nil, false, chunk.CodecRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, codec := chunk.Compress(enc, tc.data, tc.pre, tc.raw)
			if codec != tc.codec {
				t.Fatalf("codec %d, want %d", codec, tc.codec)
			}
			id := chunk.Sum(tc.data)
			got, err := chunk.Decompress(dec, id, codec, body, "test")
			if err != nil || !bytes.Equal(got, tc.data) {
				t.Fatalf("Decompress: %d bytes, %v", len(got), err)
			}
			if len(body) > 0 {
				bad := bytes.Clone(body)
				bad[len(bad)-1] ^= 1
				var inv *chunk.InvalidChunkError
				if _, err := chunk.Decompress(dec, id, codec, bad, "test"); !errors.As(err, &inv) || inv.ID != id {
					t.Fatalf("damaged: %v, want InvalidChunkError", err)
				}
			}
			var inv *chunk.InvalidChunkError
			if _, err := chunk.Decompress(dec, id, 9, body, "test"); !errors.As(err, &inv) {
				t.Fatalf("unknown codec: %v, want InvalidChunkError", err)
			}
		})
	}
}
