package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/internal/safefile"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// The sender keeps a node repository (package repo) in StateDir: the
// versions it pushed, index-only (their chunks stay where the Sources read
// them), with their lineage, and per peer and set what the peer last
// acknowledged.

// ackState is what the sender remembers of a peer's copy of a set.
type ackState struct {
	// Version is the version's number on the peer.
	Version uint64      `json:"version"`
	Digest  repo.Digest `json:"digest"`
}

// ackRel is where, relative to StateDir, the ack of peer (a transport.ID
// in text) for set is kept.
func ackRel(peer, set string) string { return filepath.Join(peersDir, peer, set+".json") }

const (
	peersDir = "peers"
	// maxAckFile bounds an ack file: a number and a digest.
	maxAckFile = 4 << 10
)

func (s *Sender) ackPath(peer transport.ID, set string) string {
	return filepath.Join(s.StateDir, ackRel(peer.String(), set))
}

// readAck returns what the sender recorded of peer's copy of set (the zero
// state when nothing, or nothing readable, is recorded).
func (s *Sender) readAck(peer transport.ID, set string) ackState {
	st, err := s.readAckFile(peer.String(), set)
	if err != nil {
		return ackState{}
	}
	return st
}

// readAckFile reads one ack file, as a repository's files are read
// (bounded, never through a link).
func (s *Sender) readAckFile(peer, set string) (ackState, error) {
	var st ackState
	b, err := safefile.ReadIn(s.StateDir, ackRel(peer, set), maxAckFile)
	if err != nil {
		return ackState{}, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return ackState{}, fmt.Errorf("read the ack of %s for %s: %w", peer, set, err)
	}
	return st, nil
}

// acked returns what peer last acknowledged of set and, when the sender's
// repository nr still holds that version, the version and its indexes by
// image name (nil otherwise).
func (s *Sender) acked(nr *repo.Repo, peer transport.ID, set string) (ackState, *repo.Version, map[string]*chunk.Index) {
	st := s.readAck(peer, set)
	if nr == nil || st.Digest.IsZero() {
		return st, nil, nil
	}
	v, err := nr.ByDigest(set, st.Digest)
	if err != nil {
		return st, nil, nil
	}
	idx := indexesOf(nr, v)
	if idx == nil {
		return st, nil, nil
	}
	return st, v, idx
}

// nodes opens the sender's repository (nil without StateDir).
func (s *Sender) nodes() (*repo.Repo, error) {
	if s.StateDir == "" {
		return nil, nil
	}
	return repo.Open(s.StateDir)
}

// indexesOf reads version v's indexes from the sender's repository, by
// image name; nil when it lacks one.
func indexesOf(nr *repo.Repo, v *repo.Version) map[string]*chunk.Index {
	out := map[string]*chunk.Index{}
	for _, im := range v.Images {
		x, err := nr.Index(v.Set, v.Seq, im.Name)
		if err != nil {
			return nil
		}
		out[im.Name] = x
	}
	return out
}

// LastAcked returns the version of set that peer last acknowledged to this
// sender (its number on the peer), and its indexes by image name (nil if
// unknown).
func (s *Sender) LastAcked(peer transport.ID, set string) (uint64, map[string]*chunk.Index) {
	nr, err := s.nodes()
	if err != nil {
		nr = nil
	}
	st, _, idx := s.acked(nr, peer, set)
	return st.Version, idx
}

// local returns the version to push for v, committed to the sender's
// repository: its head when v's images and metadata are the head's (an
// unchanged image makes no new version), else a new version whose parent
// is the head. Without a repository it is a first version, not kept.
func (s *Sender) local(ctx context.Context, nr *repo.Repo, v *Version) (*repo.Version, error) {
	idx := idxOf(v)
	for attempt := 0; ; attempt++ {
		var head *repo.Version
		if nr != nil {
			var err error
			if head, err = nr.Head(v.Set); err != nil {
				return nil, err
			}
		}
		if head != nil {
			same := &repo.Version{Set: v.Set, Parent: head.Parent, Node: head.Node, Created: head.Created, Images: namesOf(v)}
			if err := same.Seal(idx, v.Meta); err != nil {
				return nil, err
			}
			if same.Digest == head.Digest {
				return head, nil
			}
		}
		nv := &repo.Version{Set: v.Set, Node: s.Node, Created: time.Now().UTC(), Images: namesOf(v)}
		if head != nil {
			nv.Parent = head.Digest
		}
		if err := nv.Seal(idx, v.Meta); err != nil {
			return nil, err
		}
		if nr == nil {
			return nv, nil
		}
		c, err := nr.Commit(ctx, nv, idx, v.Meta, repo.CommitOptions{})
		if errors.Is(err, repo.ErrDiverged) && attempt == 0 {
			continue // another push of the set committed meanwhile: build on it
		}
		if err != nil {
			return nil, fmt.Errorf("record the version locally: %w", err)
		}
		return c.Version, nil
	}
}

func idxOf(v *Version) []*chunk.Index {
	idx := make([]*chunk.Index, len(v.Images))
	for i, im := range v.Images {
		idx[i] = im.Index
	}
	return idx
}

func namesOf(v *Version) []repo.Image {
	out := make([]repo.Image, len(v.Images))
	for i, im := range v.Images {
		out[i] = repo.Image{Name: im.Name}
	}
	return out
}

// candidateDigests lists the sender's versions of set, newest first, at
// most maxCandidates.
func candidateDigests(nr *repo.Repo, set string, v *repo.Version) []repo.Digest {
	if nr == nil {
		return nil
	}
	out := []repo.Digest{v.Digest}
	vs, err := nr.Versions(set)
	if err != nil {
		return out
	}
	for _, x := range slices.Backward(vs) {
		if len(out) >= maxCandidates {
			break
		}
		if x.Digest != v.Digest {
			out = append(out, x.Digest)
		}
	}
	return out
}

// remember records that peer holds version d of set as its number n.
func (s *Sender) remember(peer transport.ID, set string, n uint64, d repo.Digest) error {
	if s.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.ackPath(peer, set)), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(ackState{Version: n, Digest: d}, "", "  ")
	return atomicfile.WriteBytes(s.ackPath(peer, set), 0o600, b)
}

// prune removes from the sender's repository the versions of set that no
// peer last acknowledged (repo.Thin keeps the head): without it the
// repository grows by a version's indexes at every push. Failures only
// leave versions behind.
func (s *Sender) prune(ctx context.Context, nr *repo.Repo, set string) {
	if nr == nil {
		return
	}
	named := map[repo.Digest]bool{}
	peers, err := os.ReadDir(filepath.Join(s.StateDir, peersDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return // unsure what is named: keep everything
	}
	for _, p := range peers {
		if !p.IsDir() {
			continue
		}
		st, err := s.readAckFile(p.Name(), set)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return
		}
		named[st.Digest] = true
	}
	nr.Thin(ctx, set, func(vs []*repo.Version) []bool {
		keep := make([]bool, len(vs))
		for i, v := range vs {
			keep[i] = named[v.Digest]
		}
		return keep
	})
}

// AckedDigest returns the version of set that peer last acknowledged to
// this sender (zero if unknown).
func (s *Sender) AckedDigest(peer transport.ID, set string) repo.Digest {
	return s.readAck(peer, set).Digest
}
