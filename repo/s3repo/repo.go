package s3repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	gosync "sync"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/repo/s3copy"
	"github.com/ntc-project/ntc/repo/s3versions"
)

// Repo is the sets of versions in one bucket and prefix.
type Repo struct {
	sets *s3versions.Sets

	mu gosync.Mutex
	// records are the versions' records read so far, by set and digest:
	// a record never changes once its digest names it.
	records map[string]map[repo.Digest]*repo.Version
}

// A bucket's versions are thinned as a directory's are (repo.Thin).
var _ repo.Thinnable = (*Repo)(nil)

// New returns the repository whose versions sets keeps.
func New(sets *s3versions.Sets) *Repo {
	return &Repo{sets: sets, records: map[string]map[repo.Digest]*repo.Version{}}
}

// Store returns the chunk store the versions' chunks are in.
func (r *Repo) Store() *s3store.Store { return r.sets.Store() }

// ErrNoRunner reports that a bucket does not record who runs a set.
var ErrNoRunner = errors.New("who runs a set is not recorded in a repository on S3")

// maxAttempts bounds a commit's loop (other receivers moving the head).
const maxAttempts = 32

// Sets returns the names of the sets the bucket holds, sorted.
func (r *Repo) Sets(ctx context.Context) ([]string, error) {
	names, err := r.sets.Names(ctx)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// version reads entry e's record (once: it is kept) as version e.Seq.
func (r *Repo) version(ctx context.Context, set string, e s3versions.Entry) (*repo.Version, error) {
	d := repo.Digest(e.Digest)
	r.mu.Lock()
	v, ok := r.records[set][d]
	r.mu.Unlock()
	if !ok {
		rec, err := r.sets.Record(ctx, set, e)
		if err != nil {
			return nil, fmt.Errorf("read version %d of %s: %w", e.Seq, set, err)
		}
		if v, err = s3copy.DecodeRecord(rec, set, e.Digest, e.Parent); err != nil {
			return nil, fmt.Errorf("version %d of %s in %s: %w: %w", e.Seq, set, r.Store().URL(), err, repo.ErrBadVersion)
		}
		r.mu.Lock()
		if r.records[set] == nil {
			r.records[set] = map[repo.Digest]*repo.Version{}
		}
		r.records[set][d] = v
		r.mu.Unlock()
	}
	c := *v
	c.Seq = e.Seq
	c.Images = slices.Clone(v.Images)
	return &c, nil
}

// Head returns the set's current version, or nil when it has none.
func (r *Repo) Head(ctx context.Context, set string) (*repo.Version, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	return r.current(ctx, h)
}

func (r *Repo) current(ctx context.Context, h *s3versions.Head) (*repo.Version, error) {
	e, ok := h.CurrentEntry()
	if !ok {
		return nil, nil
	}
	return r.version(ctx, h.Set, e)
}

// Versions returns the set's versions, oldest first.
func (r *Repo) Versions(ctx context.Context, set string) ([]*repo.Version, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	out := make([]*repo.Version, 0, len(h.Versions))
	for _, e := range h.Versions {
		v, err := r.version(ctx, set, e)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Version returns version seq of set (repo.ErrNotFound if there is none).
func (r *Repo) Version(ctx context.Context, set string, seq uint64) (*repo.Version, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	e, ok := h.BySeq(seq)
	if !ok {
		return nil, fmt.Errorf("version %d of %s in %s: %w", seq, set, r.Store().URL(), repo.ErrNotFound)
	}
	return r.version(ctx, set, e)
}

// ByDigest returns the set's version with digest d.
func (r *Repo) ByDigest(ctx context.Context, set string, d repo.Digest) (*repo.Version, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	e, ok := h.ByDigest(chunk.ID(d))
	if !ok {
		return nil, fmt.Errorf("version %s of %s in %s: %w", d.Short(), set, r.Store().URL(), repo.ErrNotFound)
	}
	return r.version(ctx, set, e)
}

// Newest returns, among the digests offered, the version the set holds
// with the highest number, or nil: the base a push can be a delta against.
func (r *Repo) Newest(ctx context.Context, set string, offered []repo.Digest) (*repo.Version, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	for _, e := range slices.Backward(h.Versions) {
		if slices.Contains(offered, repo.Digest(e.Digest)) {
			return r.version(ctx, set, e)
		}
	}
	return nil, nil
}

// Diverged returns the set's versions that are neither the current one,
// nor its ancestors or descendants, nor ancestors of another such version
// (by the parent links the head lists): the tips of copies that ran apart.
func (r *Repo) Diverged(ctx context.Context, set string) ([]*repo.Version, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	cur, ok := h.CurrentEntry()
	if !ok {
		return nil, nil
	}
	links := map[chunk.ID]chunk.ID{}
	for _, e := range h.Versions {
		links[e.Digest] = e.Parent
	}
	var tips []*repo.Version
	for _, e := range h.Versions {
		if e.Digest == cur.Digest || ancestor(links, e.Digest, cur.Digest) || ancestor(links, cur.Digest, e.Digest) {
			continue
		}
		if slices.ContainsFunc(h.Versions, func(w s3versions.Entry) bool { return w.Digest != e.Digest && ancestor(links, e.Digest, w.Digest) }) {
			continue
		}
		v, err := r.version(ctx, set, e)
		if err != nil {
			return nil, err
		}
		tips = append(tips, v)
	}
	return tips, nil
}

// ancestor reports whether anc is a proper ancestor of desc by links.
func ancestor(links map[chunk.ID]chunk.ID, anc, desc chunk.ID) bool {
	d := desc
	for range len(links) + 1 {
		p, ok := links[d]
		if !ok || p == (chunk.ID{}) {
			return false
		}
		if p == anc {
			return true
		}
		d = p
	}
	return false
}

// Index reads the index of image name of version seq, checked against
// the version's record.
func (r *Repo) Index(ctx context.Context, set string, seq uint64, name string) (*chunk.Index, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	e, ok := h.BySeq(seq)
	if !ok {
		return nil, fmt.Errorf("index of %s in version %d of %s: %w", name, seq, set, repo.ErrNotFound)
	}
	v, err := r.version(ctx, set, e)
	if err != nil {
		return nil, err
	}
	im, ok := v.Image(name)
	if !ok {
		return nil, fmt.Errorf("index of %s in version %d of %s: no such image: %w", name, seq, set, repo.ErrNotFound)
	}
	x, err := r.sets.Index(ctx, set, e, name)
	if err != nil {
		return nil, err
	}
	if d, _, err := repo.IndexDigest(x); err != nil || d != im.Index || x.Size != im.Size {
		return nil, fmt.Errorf("index of %s in version %d of %s does not match the version: %w", name, seq, set, repo.ErrBadVersion)
	}
	return x, nil
}

// Meta returns version seq's metadata (nil when it has none).
func (r *Repo) Meta(ctx context.Context, set string, seq uint64) ([]byte, error) {
	h, err := r.sets.Head(ctx, set)
	if err != nil {
		return nil, err
	}
	e, ok := h.BySeq(seq)
	if !ok {
		return nil, fmt.Errorf("metadata of version %d of %s: %w", seq, set, repo.ErrNotFound)
	}
	return r.sets.Meta(ctx, set, e)
}

// Commit stores version v of its set with its indexes and metadata, whose
// chunks must be in the store (synced), as repo.Repo.Commit does: the
// current version moves to v when the set has none, when it is an
// ancestor of v (by the head's links and opt.Lineage), or with opt.Force;
// otherwise v is kept and the error is repo.ErrDiverged (with Committed
// filled in). opt.Seq is not supported: the bucket numbers versions.
func (r *Repo) Commit(ctx context.Context, v *repo.Version, idx []*chunk.Index, meta []byte, opt repo.CommitOptions) (*repo.Committed, error) {
	if err := v.Matches(idx, meta); err != nil {
		return nil, err
	}
	if opt.Seq != 0 {
		return nil, fmt.Errorf("commit %s: a bucket numbers its versions itself", v.Set)
	}
	sv, err := s3copy.Encode(v, idx, meta)
	if err != nil {
		return nil, err
	}
	known := map[repo.Digest]repo.Digest{}
	for _, l := range opt.Lineage {
		known[l.Digest] = l.Parent
	}
	for range maxAttempts {
		h, err := r.sets.Head(ctx, v.Set)
		if err != nil {
			return nil, err
		}
		move := opt.Force || s3copy.FastForward(h, v, known)
		if e, ok := h.ByDigest(sv.Digest); ok {
			if h.Current != e.Seq && move {
				if h, err = r.sets.SetCurrent(ctx, h, e.Seq); errors.Is(err, s3store.ErrConflict) || errors.Is(err, s3store.ErrUnknownOutcome) {
					continue
				} else if err != nil {
					return nil, err
				}
			}
			return r.committed(ctx, h, e, true)
		}
		nh, err := r.sets.Commit(ctx, h, sv, s3versions.CommitOptions{MakeCurrent: move})
		switch {
		case err == nil:
			e, _ := nh.ByDigest(sv.Digest)
			return r.committed(ctx, nh, e, false)
		case errors.Is(err, s3store.ErrConflict), errors.Is(err, s3versions.ErrExists), errors.Is(err, s3store.ErrUnknownOutcome):
			continue // another receiver moved the head, or the answer was lost: decide again
		default:
			return nil, err
		}
	}
	return nil, fmt.Errorf("commit %s to %s: the set's head kept changing (%d attempts): %w", v.Digest.Short(), v.Set, maxAttempts, s3store.ErrConflict)
}

// committed says what a commit did: e is the version's entry in the head h
// it left.
func (r *Repo) committed(ctx context.Context, h *s3versions.Head, e s3versions.Entry, existed bool) (*repo.Committed, error) {
	v, err := r.version(ctx, h.Set, e)
	if err != nil {
		return nil, err
	}
	c := &repo.Committed{Version: v, Existed: existed}
	if h.Current == e.Seq {
		c.Head = v
		return c, nil
	}
	if c.Head, err = r.current(ctx, h); err != nil {
		return nil, err
	}
	return c, fmt.Errorf("set %s: version %s (from %s) does not follow the current version %s (from %s): %w",
		h.Set, v.Digest.Short(), v.Node, c.Head.Digest.Short(), c.Head.Node, repo.ErrDiverged)
}

// Remove drops version seq of set; its objects and the chunks only it
// used go at the next collection. The current version cannot be removed.
func (r *Repo) Remove(ctx context.Context, set string, seq uint64) error {
	for range maxAttempts {
		h, err := r.sets.Head(ctx, set)
		if err != nil {
			return err
		}
		if h.Current == seq {
			return fmt.Errorf("remove version %d of %s: it is the current one", seq, set)
		}
		if _, ok := h.BySeq(seq); !ok {
			return nil
		}
		_, err = r.sets.Remove(ctx, h, seq)
		if errors.Is(err, s3store.ErrConflict) || errors.Is(err, s3store.ErrUnknownOutcome) {
			continue
		}
		return err
	}
	return fmt.Errorf("remove version %d of %s: the set's head kept changing: %w", seq, set, s3store.ErrConflict)
}

// SetRunner is ErrNoRunner: a bucket does not record who runs a set.
func (r *Repo) SetRunner(ctx context.Context, set, node string, d repo.Digest) error {
	return ErrNoRunner
}

// OpenStore returns the bucket's chunk store after reading the packs
// other writers added since it was last read (so a push asks only for
// the chunks nobody stored). It stays open after release: the caller
// closes it (Store().Close) when done with the Repo.
func (r *Repo) OpenStore(ctx context.Context) (chunk.WriteStore, func() error, error) {
	if err := r.Store().Refresh(ctx); err != nil {
		return nil, nil, err
	}
	return writeStore{r.Store()}, func() error { return nil }, nil
}

// writeStore is the bucket's store as a push writes into it. The Put
// that fills a pack starts its upload under the Put's context, and a
// receiver puts under a context that ends with the round of chunks (the
// last pack is uploaded after it): the upload must outlive it. Sync
// waits for it and reports its failure.
type writeStore struct{ *s3store.Store }

func (s writeStore) Put(ctx context.Context, id chunk.ID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Store.Put(context.WithoutCancel(ctx), id, data)
}

func (s writeStore) PutVerified(ctx context.Context, id chunk.ID, data, zstd []byte, raw bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Store.PutVerified(context.WithoutCancel(ctx), id, data, zstd, raw)
}

// CollectMinAge is how old a pack no version uses must be before a
// collection removes it: longer than the longest push, whose chunks are
// stored before the version that uses them is committed. A push that
// outlives it is not lost: its commit fails and it is sent again.
const CollectMinAge = 6 * time.Hour

// Collect removes what no version of any set uses, while other receivers
// go on committing (s3versions.Sets.Collect, whose rule makes it safe):
// packs whose chunks no listed version uses and are older than
// CollectMinAge. st must be the bucket's store.
func (r *Repo) Collect(ctx context.Context, st chunk.WriteStore) (chunk.CompactStats, error) {
	if ws, ok := st.(writeStore); !ok || ws.Store != r.Store() {
		return chunk.CompactStats{}, fmt.Errorf("collect garbage: %T is not the bucket's store", st)
	}
	cs, err := r.sets.Collect(ctx, s3versions.CollectOptions{MinAge: CollectMinAge})
	return chunk.CompactStats{ChunksDropped: cs.DeadChunks, PacksRemoved: cs.Deleted, PacksRewritten: cs.Rewritten,
		BytesCopied: cs.BytesCopied, BytesFreed: cs.BytesFreed - cs.BytesCopied}, err
}
