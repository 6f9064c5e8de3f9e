package s3store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/chunk"
)

// A pack object holds records exactly as a local chunk.PackStore's pack
// file does, so a pack can be copied either way as it is:
//
//	magic "NTCK" | ID (32 bytes) | codec (1 byte) | length (u32) | payload
//
// Its name is the BLAKE3-256 of its bytes in hex: packs/<name>. A create
// that finds the name taken does not adopt the object there (it may be
// one a collection is deleting, gc.go): the writer appends a salt record
// (a random ID, codec 0xff, no payload) and creates the pack under its new
// name. A salt record holds no chunk and no listing lists it; a local
// PackStore given such a pack maps its random ID, which nobody asks for.
//
// Its listing, index/<name>, says which chunks it holds and where, like a
// local pack's sidecar, so that opening the store reads listings instead
// of packs:
//
//	magic "NTCL" | version (1 byte) | pack name (32 bytes) | pack size (u64) |
//	count (u32) | count × (ID (32 bytes) | codec (1 byte) | length (u32) | payload offset (u64)) |
//	BLAKE3-256 of everything before it
//
// Integers are big-endian. A listing is written only after its pack, and
// a pack counts as stored only once its listing exists: a writer killed in
// between leaves a pack no listing names, which readers never see.
const (
	recMagic     = "NTCK"
	recHeaderLen = 4 + 32 + 1 + 4
	// maxRecordLen bounds one record's payload, as chunk.PackStore does.
	maxRecordLen = 128 << 20

	listMagic   = "NTCL"
	listVersion = 1
	listHead    = 4 + 1 + 32 + 8 + 4
	listRecLen  = 32 + 1 + 4 + 8
	// maxPackLen bounds a pack (S3's single PUT takes 5 GiB).
	maxPackLen = 4 << 30
	// maxListingLen bounds a listing: a pack of records with empty
	// payloads could list maxPackLen/recHeaderLen of them, but a store
	// never writes packs that dense; a listing past this is refused.
	maxListingLen = 64 << 20
)

// packName names a pack: the BLAKE3-256 of its bytes.
type packName [32]byte

func (n packName) String() string { return hex.EncodeToString(n[:]) }

func packKey(n packName) string    { return "packs/" + n.String() }
func listingKey(n packName) string { return "index/" + n.String() }

// parsePackName parses the name part of a pack or listing key: 64
// lowercase hex digits, nothing else.
func parsePackName(s string) (packName, bool) {
	var n packName
	if len(s) != 64 || strings.ToLower(s) != s {
		return n, false
	}
	if _, err := hex.Decode(n[:], []byte(s)); err != nil {
		return n, false
	}
	return n, true
}

// record is where a chunk's payload lies in a pack.
type record struct {
	id     chunk.ID
	codec  uint8
	length uint32
	off    int64 // of the payload
}

// appendRecord appends a record to a pack being built and returns where
// its payload lies.
func appendRecord(pack []byte, id chunk.ID, codec uint8, body []byte) ([]byte, record) {
	var hdr [recHeaderLen]byte
	copy(hdr[:], recMagic)
	copy(hdr[4:], id[:])
	hdr[36] = codec
	binary.BigEndian.PutUint32(hdr[37:], uint32(len(body)))
	r := record{id: id, codec: codec, length: uint32(len(body)), off: int64(len(pack)) + recHeaderLen}
	return append(append(pack, hdr[:]...), body...), r
}

// codecSalt marks a salt record: a random ID and no payload, at the end
// of a pack that would otherwise have the same bytes, and so the same
// name, as a pack already in the bucket. It holds no chunk; listings do
// not list it.
const codecSalt = 0xff

// appendSalt returns pack with a salt record after its records.
func appendSalt(pack []byte) []byte {
	var id chunk.ID
	rand.Read(id[:])
	out, _ := appendRecord(slices.Clip(pack), id, codecSalt, nil)
	return out
}

var errBadListing = errors.New("damaged pack listing")

func encodeListing(name packName, size int64, recs []record) []byte {
	b := make([]byte, 0, listHead+len(recs)*listRecLen+32)
	b = append(b, listMagic...)
	b = append(b, listVersion)
	b = append(b, name[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for _, r := range recs {
		b = append(b, r.id[:]...)
		b = append(b, r.codec)
		b = binary.BigEndian.AppendUint32(b, r.length)
		b = binary.BigEndian.AppendUint64(b, uint64(r.off))
	}
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

// decodeListing reads a listing; every record it returns lies within the
// pack's size, after a record header.
func decodeListing(b []byte) (name packName, size int64, recs []record, err error) {
	if len(b) < listHead+32 || string(b[:4]) != listMagic {
		return name, 0, nil, errBadListing
	}
	if b[4] != listVersion {
		return name, 0, nil, fmt.Errorf("%w: version %d (this ntc reads %d)", errBadListing, b[4], listVersion)
	}
	body, sum := b[:len(b)-32], b[len(b)-32:]
	if got := blake3.Sum256(body); string(got[:]) != string(sum) {
		return name, 0, nil, fmt.Errorf("%w: checksum", errBadListing)
	}
	copy(name[:], b[5:])
	sz := binary.BigEndian.Uint64(b[37:])
	n := binary.BigEndian.Uint32(b[45:])
	if sz > maxPackLen || uint64(len(body)-listHead) != uint64(n)*listRecLen {
		return name, 0, nil, errBadListing
	}
	size = int64(sz)
	recs = make([]record, n)
	p := body[listHead:]
	for i := range recs {
		r := &recs[i]
		copy(r.id[:], p[:32])
		r.codec = p[32]
		r.length = binary.BigEndian.Uint32(p[33:])
		r.off = int64(binary.BigEndian.Uint64(p[37:]))
		if r.length > maxRecordLen || r.off < recHeaderLen || r.off > size || int64(r.length) > size-r.off {
			return name, 0, nil, errBadListing
		}
		p = p[listRecLen:]
	}
	return name, size, recs, nil
}

// scanPack reads the records of a whole pack, for when its listing is
// damaged: it stops at the first record that is not whole. Payloads are
// not verified here; every read verifies its chunk.
func scanPack(pack []byte) []record {
	var recs []record
	off := 0
	for len(pack)-off >= recHeaderLen && string(pack[off:off+4]) == recMagic {
		n := binary.BigEndian.Uint32(pack[off+37:])
		if n > maxRecordLen || int64(n) > int64(len(pack)-off-recHeaderLen) {
			break
		}
		var id chunk.ID
		copy(id[:], pack[off+4:])
		if pack[off+36] != codecSalt {
			recs = append(recs, record{id: id, codec: pack[off+36], length: n, off: int64(off + recHeaderLen)})
		}
		off += recHeaderLen + int(n)
	}
	return recs
}
