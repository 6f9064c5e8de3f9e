package chunk

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// A stored chunk is its content, compressed or not, and a codec byte that
// says which: DirStore's chunk files, PackStore's records and the packs
// of the object store (chunk/s3store) all store chunks this way.
const (
	CodecRaw  = codecRaw
	CodecZstd = codecZstd
)

// Compress returns the stored form of data: zstd, if the caller has it
// (data compressed with zstd); data as it is if raw says it does not
// compress; else data compressed with enc, if that is smaller.
func Compress(enc *zstd.Encoder, data, zstd []byte, raw bool) (body []byte, codec uint8) {
	switch {
	case zstd != nil:
		return zstd, codecZstd
	case !raw:
		if c := enc.EncodeAll(data, make([]byte, 0, len(data)/2)); len(c) < len(data) {
			return c, codecZstd
		}
	}
	return data, codecRaw
}

// Decompress returns the content of a stored chunk, verified against id:
// content that does not decompress or match is an *InvalidChunkError
// saying where it was found.
func Decompress(dec *zstd.Decoder, id ID, codec uint8, body []byte, where string) ([]byte, error) {
	data := body
	switch codec {
	case codecRaw:
	case codecZstd:
		var err error
		if data, err = dec.DecodeAll(body, nil); err != nil {
			return nil, &InvalidChunkError{ID: id, Where: where + ": " + err.Error()}
		}
	default:
		return nil, &InvalidChunkError{ID: id, Where: fmt.Sprintf("%s: unknown codec %d", where, codec)}
	}
	if err := Verify(id, data, where); err != nil {
		return nil, err
	}
	return data, nil
}
