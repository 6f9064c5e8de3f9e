package sync

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/transport"
)

// ackState is what the sender remembers of a peer's copy of a set.
type ackState struct {
	Version uint64     `json:"version"`
	Images  []ackImage `json:"images"`
}

type ackImage struct {
	Name   string   `json:"name"`
	Digest chunk.ID `json:"digest"`
}

func (s *Sender) ackPath(peer transport.ID, set string) string {
	return filepath.Join(s.StateDir, "peers", peer.String(), set+".json")
}

func (s *Sender) cachedIndexPath(d chunk.ID) string {
	return filepath.Join(s.StateDir, "indexes", d.String()+".idx")
}

// cachedIndex returns the index with digest d if the sender keeps it.
func (s *Sender) cachedIndex(d chunk.ID) *chunk.Index {
	if s.StateDir == "" {
		return nil
	}
	s.mu.Lock()
	x, ok := s.indexes[d]
	s.mu.Unlock()
	if ok {
		return x
	}
	b, err := os.ReadFile(s.cachedIndexPath(d))
	if err != nil || chunk.ID(blake3.Sum256(b)) != d {
		return nil
	}
	if x, err = chunk.DecodeIndex(bytes.NewReader(b)); err != nil {
		return nil
	}
	s.mu.Lock()
	if s.indexes == nil {
		s.indexes = map[chunk.ID]*chunk.Index{}
	}
	s.indexes[d] = x
	s.mu.Unlock()
	return x
}

// readAck returns what the sender recorded of peer's copy of set (the zero
// state when nothing, or nothing readable, is recorded).
func (s *Sender) readAck(peer transport.ID, set string) ackState {
	var st ackState
	b, err := os.ReadFile(s.ackPath(peer, set))
	if err != nil || json.Unmarshal(b, &st) != nil {
		return ackState{}
	}
	return st
}

// LastAcked returns the version of set that peer last acknowledged to this
// sender, and its indexes by image name (nil if unknown).
func (s *Sender) LastAcked(peer transport.ID, set string) (uint64, map[string]*chunk.Index) {
	b, idx := s.lastBase(peer, set)
	return b.version, idx
}

// keepIndexes stores the version's indexes in the sender's cache by
// digest (those not there yet), so that the next push can offer a delta
// against them once the receiver acknowledged this one. It runs while the
// chunks travel.
func (s *Sender) keepIndexes(v *Version) ([]chunk.ID, error) {
	digests := make([]chunk.ID, len(v.Images))
	if s.StateDir != "" {
		if err := os.MkdirAll(filepath.Join(s.StateDir, "indexes"), 0o700); err != nil {
			return nil, err
		}
	}
	for i, im := range v.Images {
		d, enc, err := indexDigest(im.Index)
		if err != nil {
			return nil, err
		}
		digests[i] = d
		if s.StateDir == "" {
			continue
		}
		p := s.cachedIndexPath(d)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			if err := atomicfile.WriteBytes(p, 0o600, enc); err != nil {
				return nil, err
			}
		}
	}
	return digests, nil
}

// remember records that peer acknowledged version of set, whose images'
// indexes keepIndexes stored under digests.
func (s *Sender) remember(peer transport.ID, set string, version uint64, v *Version, digests []chunk.ID) error {
	if s.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.ackPath(peer, set)), 0o700); err != nil {
		return err
	}
	st := ackState{Version: version}
	for i, im := range v.Images {
		st.Images = append(st.Images, ackImage{Name: im.Name, Digest: digests[i]})
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	return atomicfile.WriteBytes(s.ackPath(peer, set), 0o600, b)
}

// lastBase is what the sender believes the receiver holds: the version it
// last acknowledged, with the indexes the sender keeps of it; nothing when
// it knows of none.
func (s *Sender) lastBase(peer transport.ID, set string) (base, map[string]*chunk.Index) {
	st := s.readAck(peer, set)
	out := base{version: st.Version}
	idx := map[string]*chunk.Index{}
	for _, im := range st.Images {
		out.images = append(out.images, imageRef{name: im.Name, digest: im.Digest})
		if x := s.cachedIndex(im.Digest); x != nil {
			idx[im.Name] = x
		}
	}
	return out, idx
}

// shareCache takes a shared lock on the index cache for one push, from
// before its indexes are stored until its acknowledgement is recorded:
// pruneCache, in this process or another, leaves the cache alone meanwhile.
func (s *Sender) shareCache() (release func()) {
	if s.StateDir == "" {
		return func() {}
	}
	dir := filepath.Join(s.StateDir, "indexes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return func() {}
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return func() {}
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		f.Close()
		return func() {}
	}
	return func() { f.Close() }
}

// pruneCache removes the cached indexes that no recorded acknowledgement
// names (those of versions acknowledged before the last one of their set),
// unless a push, in any process, is under way. Without it the cache grows
// by a version's indexes at every push. Failures only leave files behind.
func (s *Sender) pruneCache() {
	if s.StateDir == "" {
		return
	}
	dir := filepath.Join(s.StateDir, "indexes")
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return // a push is under way
	}
	named := map[chunk.ID]bool{}
	acks, _ := filepath.Glob(filepath.Join(s.StateDir, "peers", "*", "*.json"))
	for _, p := range acks {
		var st ackState
		b, err := os.ReadFile(p)
		if err != nil || json.Unmarshal(b, &st) != nil {
			return // unsure what is named: keep everything
		}
		for _, im := range st.Images {
			named[im.Digest] = true
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".idx")
		if !ok {
			continue
		}
		d, err := chunk.ParseID(name)
		if err != nil || named[d] {
			continue
		}
		os.Remove(filepath.Join(dir, e.Name()))
		s.mu.Lock()
		delete(s.indexes, d)
		s.mu.Unlock()
	}
}
