package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/internal/atomicfile"
)

// A pack's sidecar, pack-NNNNNN.hdr, lists the records of the pack's first
// Covered bytes that the store mapped when it was written (at Close), so
// that opening the store reads the sidecars and scans only what they do not
// cover, instead of reading every pack through (1 GiB of packs took a
// second to open from a cold cache, and every replication round opens its
// stores):
//
//	magic "NTCH" | version (1 byte) | covered (u64) | count (u32) |
//	count × (ID (32 bytes) | codec (1 byte) | length (u32) | payload offset (u64)) |
//	BLAKE3-256 of everything before it
//
// Integers are big-endian. Records a pack holds but the store no longer
// mapped (dropped by Compact, forgotten, duplicates) are left out. A
// sidecar that is missing, damaged or longer than its pack is ignored: the
// pack is scanned as before. Packs are only appended to, so a sidecar stays
// true of the prefix it covers for as long as its pack exists.
const (
	sidecarMagic   = "NTCH"
	sidecarVersion = 1
	sidecarHead    = 4 + 1 + 8 + 4
	sidecarRecLen  = 32 + 1 + 4 + 8
)

func sidecarName(n int) string { return fmt.Sprintf("pack-%06d.hdr", n) }

type sidecarRec struct {
	id  ID
	loc packLoc
}

func encodeSidecar(covered int64, recs []sidecarRec) []byte {
	b := make([]byte, 0, sidecarHead+len(recs)*sidecarRecLen+32)
	b = append(b, sidecarMagic...)
	b = append(b, sidecarVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(covered))
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for _, r := range recs {
		b = append(b, r.id[:]...)
		b = append(b, r.loc.codec)
		b = binary.BigEndian.AppendUint32(b, r.loc.length)
		b = binary.BigEndian.AppendUint64(b, uint64(r.loc.off))
	}
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

var errBadSidecar = errors.New("damaged pack sidecar")

// decodeSidecar reads a sidecar of pack; every record lies within covered.
func decodeSidecar(b []byte, pack int) (covered int64, recs []sidecarRec, err error) {
	if len(b) < sidecarHead+32 || string(b[:4]) != sidecarMagic || b[4] != sidecarVersion {
		return 0, nil, errBadSidecar
	}
	body, sum := b[:len(b)-32], b[len(b)-32:]
	if got := blake3.Sum256(body); string(got[:]) != string(sum) {
		return 0, nil, errBadSidecar
	}
	c := binary.BigEndian.Uint64(b[5:])
	n := binary.BigEndian.Uint32(b[13:])
	if c > 1<<62 || uint64(len(body)-sidecarHead) != uint64(n)*sidecarRecLen {
		return 0, nil, errBadSidecar
	}
	covered = int64(c)
	recs = make([]sidecarRec, n)
	p := body[sidecarHead:]
	for i := range recs {
		r := &recs[i]
		copy(r.id[:], p[:32])
		r.loc = packLoc{pack: int32(pack), codec: p[32], length: binary.BigEndian.Uint32(p[33:]), off: int64(binary.BigEndian.Uint64(p[37:]))}
		if r.loc.length > maxRecordLen || r.loc.off < packHeaderLen || r.loc.off > covered || int64(r.loc.length) > covered-r.loc.off {
			return 0, nil, errBadSidecar
		}
		p = p[sidecarRecLen:]
	}
	return covered, recs, nil
}

// load maps pack's records: those its sidecar lists, then those a scan
// finds after what the sidecar covers (or in the whole pack, without a
// usable sidecar). It returns where the last whole record ends.
func (s *PackStore) load(pack int, f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "packs", sidecarName(pack)))
	if err != nil {
		return s.scan(pack, f, 0)
	}
	covered, recs, err := decodeSidecar(b, pack)
	if err != nil || covered > fi.Size() {
		return s.scan(pack, f, 0)
	}
	for _, r := range recs {
		if err := s.mapRecord(f, r.id, r.loc, nil); err != nil {
			return 0, err
		}
	}
	s.sidecars[pack] = covered
	return s.scan(pack, f, covered)
}

// mapRecord maps id to loc. A chunk already mapped from an earlier pack (a
// copy Compact made, or the original of one) is mapped to loc only if its
// content there verifies: a copy torn by a crash never hides a good
// original. body is the record's payload when the caller has it.
func (s *PackStore) mapRecord(f *os.File, id ID, loc packLoc, body []byte) error {
	if _, dup := s.where[id]; !dup {
		s.where[id] = loc
		return nil
	}
	if body == nil {
		body = make([]byte, loc.length)
		if _, err := f.ReadAt(body, loc.off); err != nil {
			return nil // unreadable: keep the other copy
		}
	}
	if s.verifyRecord(id, loc.codec, body) == nil {
		s.where[id] = loc
	}
	return nil
}

// writeSidecars writes the sidecar of every pack whose records it does not
// cover yet, except short packs. Called by Close with the lock held, after
// the packs are synced: a sidecar never lists a record that is not durable.
func (s *PackStore) writeSidecars() error {
	recs := map[int][]sidecarRec{}
	for id, loc := range s.where {
		recs[int(loc.pack)] = append(recs[int(loc.pack)], sidecarRec{id, loc})
	}
	var first error
	for n, f := range s.packs {
		if s.short[n] {
			continue
		}
		fi, err := f.Stat()
		if err != nil {
			first = cmpErr(first, err)
			continue
		}
		if covered, ok := s.sidecars[n]; ok && covered == fi.Size() {
			continue
		}
		p := filepath.Join(s.dir, "packs", sidecarName(n))
		if err := atomicfile.WriteBytes(p, 0o600, encodeSidecar(fi.Size(), recs[n])); err != nil {
			first = cmpErr(first, err)
			continue
		}
		s.sidecars[n] = fi.Size()
	}
	return first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// removeSidecar removes pack n's sidecar, before the pack itself.
func (s *PackStore) removeSidecar(n int) error {
	err := os.Remove(filepath.Join(s.dir, "packs", sidecarName(n)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
