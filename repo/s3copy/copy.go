package s3copy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/repo/s3versions"
)

// Options change how a version is copied.
type Options struct {
	// Force makes the version current at the destination even when its
	// current version is not an ancestor (the user chose this copy).
	Force bool
	// Workers is how many chunks are read and stored at once (default 4).
	Workers int
}

// Stats say what a copy did.
type Stats struct {
	Set    string
	Digest repo.Digest
	// Seq is the version's number at the destination.
	Seq uint64
	// Current says the version is the destination's current one.
	Current bool
	// Existed says the destination already held the version.
	Existed bool
	// Chunks is how many distinct chunks the version uses, Bytes their
	// size; Copied and CopiedBytes are those the destination lacked.
	Chunks, Copied     int
	Bytes, CopiedBytes int64
}

// Limits.
const (
	// batch is how many chunks the destination is asked about, and
	// fetched, at once: it bounds what a copy holds besides the version's
	// list of chunk IDs.
	batch = 8192
	// maxAttempts bounds the commit loop (conflicts with other writers,
	// chunks a collection took meanwhile).
	maxAttempts = 16
	// maxLineage is how many parent links are followed to decide a
	// fast-forward.
	maxLineage = 1 << 16
)

// Record encodes v as the record a version is stored under on S3: its
// version.json without the numbers and origin that are local to a node.
func Record(v *repo.Version) ([]byte, error) {
	c := *v
	c.Seq, c.From = 0, ""
	return json.Marshal(&c)
}

// Encode returns version v, with its indexes (one per image, in the
// order of v.Images) and metadata, as s3versions.Sets.Commit stores it.
func Encode(v *repo.Version, idx []*chunk.Index, meta []byte) (s3versions.Version, error) {
	sv := s3versions.Version{Digest: chunk.ID(v.Digest), Parent: chunk.ID(v.Parent), Meta: meta}
	var err error
	if sv.Record, err = Record(v); err != nil {
		return sv, err
	}
	for i, x := range idx {
		_, b, err := repo.IndexDigest(x)
		if err != nil {
			return sv, err
		}
		sv.Indexes = append(sv.Indexes, s3versions.Index{Name: v.Images[i].Name, Data: b})
	}
	return sv, nil
}

// DecodeRecord decodes a version's record as Record wrote it, and checks
// that it is the version of set with the digest and parent a head lists
// and that its digest is its content's.
func DecodeRecord(rec []byte, set string, digest, parent chunk.ID) (*repo.Version, error) {
	var v repo.Version
	dec := json.NewDecoder(bytes.NewReader(rec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	if dec.More() {
		return nil, errors.New("record: data after the version")
	}
	if v.Set != set || chunk.ID(v.Digest) != digest || chunk.ID(v.Parent) != parent {
		return nil, errors.New("the record names another version")
	}
	if v.Seq != 0 || v.From != "" {
		return nil, errors.New("the record has a node's local fields")
	}
	if err := v.Verify(); err != nil {
		return nil, err
	}
	return &v, nil
}

// chunkGetter is where Upload reads chunks: a node's pack store.
type chunkGetter interface {
	Get(ctx context.Context, id chunk.ID) ([]byte, error)
}

// Upload copies version seq (0: the current one) of set from the node
// repository src, whose chunks are in chunks, to the S3 repository dst:
// the chunks dst lacks, then the version, committed with its digest,
// parent and node. The version becomes dst's current one on a
// fast-forward (or with opt.Force); otherwise it is kept, and the error is
// repo.ErrDiverged with the Stats filled in.
func Upload(ctx context.Context, src *repo.Repo, chunks chunkGetter, dst *s3versions.Sets, set string, seq uint64, opt Options) (Stats, error) {
	v, idx, meta, err := readLocal(src, set, seq)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Set: set, Digest: v.Digest}
	ids, sizes := distinct(idx)
	st.Chunks, st.Bytes = len(ids), sum(sizes)
	store := dst.Store()
	send := func(ctx context.Context, ids []chunk.ID) error {
		n, b, err := copyTo(ctx, ids, chunks, store, opt.Workers)
		st.Copied += n
		st.CopiedBytes += b
		return err
	}
	if err := send(ctx, ids); err != nil {
		return st, fmt.Errorf("upload %s %s to %s: %w", set, v.Digest.Short(), store.URL(), err)
	}
	sv, err := Encode(v, idx, meta)
	if err != nil {
		return st, err
	}
	links, err := src.Ancestry(set, v.Parent, maxLineage)
	if err != nil {
		return st, err
	}
	known := map[repo.Digest]repo.Digest{}
	for _, l := range links {
		known[l.Digest] = l.Parent
	}
	for range maxAttempts {
		h, err := dst.Head(ctx, set)
		if err != nil {
			return st, err
		}
		ff := FastForward(h, v, known)
		if e, ok := h.ByDigest(sv.Digest); ok {
			st.Existed, st.Seq = true, e.Seq
			err := finishExisting(ctx, dst, h, e, ff || opt.Force, &st)
			return st, err
		}
		nh, err := dst.Commit(ctx, h, sv, s3versions.CommitOptions{MakeCurrent: ff || opt.Force})
		var missing *s3store.MissingError
		switch {
		case err == nil:
			e, _ := nh.ByDigest(sv.Digest)
			st.Seq, st.Current = e.Seq, nh.Current == e.Seq
			return st, divergedUnless(st.Current, set, v)
		case errors.Is(err, s3store.ErrConflict), errors.Is(err, s3versions.ErrExists), errors.Is(err, s3store.ErrUnknownOutcome):
			continue // another writer moved the head, or the answer was lost: read it, decide again
		case errors.As(err, &missing):
			if err := send(ctx, missing.IDs); err != nil { // a collection took them: again
				return st, err
			}
		default:
			return st, fmt.Errorf("upload %s %s to %s: %w", set, v.Digest.Short(), store.URL(), err)
		}
	}
	return st, fmt.Errorf("upload %s %s to %s: the set's head kept changing (%d attempts): %w", set, v.Digest.Short(), store.URL(), maxAttempts, s3store.ErrConflict)
}

// finishExisting makes a version the bucket already holds current if it
// should be and is not.
func finishExisting(ctx context.Context, dst *s3versions.Sets, h *s3versions.Head, e s3versions.Entry, makeCurrent bool, st *Stats) error {
	st.Current = h.Current == e.Seq
	if !st.Current && makeCurrent {
		if _, err := dst.SetCurrent(ctx, h, e.Seq); err != nil {
			return fmt.Errorf("make %s %s current: %w", st.Set, st.Digest.Short(), err)
		}
		st.Current = true
	}
	if !st.Current {
		return fmt.Errorf("set %s: version %s is held but does not follow the current version: %w", st.Set, st.Digest.Short(), repo.ErrDiverged)
	}
	return nil
}

func divergedUnless(current bool, set string, v *repo.Version) error {
	if current {
		return nil
	}
	return fmt.Errorf("set %s: version %s (from %s) does not follow the current version; kept beside it (force to make it current): %w",
		set, v.Digest.Short(), v.Node, repo.ErrDiverged)
}

// FastForward reports whether committing v to the set whose head is h
// moves the current version: h has none, or it is an ancestor of v by the
// parent links the head lists or known gives.
func FastForward(h *s3versions.Head, v *repo.Version, known map[repo.Digest]repo.Digest) bool {
	cur, ok := h.CurrentEntry()
	if !ok {
		return true
	}
	d := v.Parent
	for range maxLineage {
		if d.IsZero() {
			return false
		}
		if chunk.ID(d) == cur.Digest {
			return true
		}
		if p, ok := known[d]; ok {
			d = p
		} else if e, ok := h.ByDigest(chunk.ID(d)); ok {
			d = repo.Digest(e.Parent)
		} else {
			return false
		}
	}
	return false
}

// readLocal reads version seq (0: the head) of set from r.
func readLocal(r *repo.Repo, set string, seq uint64) (*repo.Version, []*chunk.Index, []byte, error) {
	var v *repo.Version
	var err error
	if seq == 0 {
		v, err = r.Head(set)
		if err == nil && v == nil {
			err = fmt.Errorf("%s holds no version of %s: %w", r.Dir(), set, repo.ErrNotFound)
		}
	} else {
		v, err = r.Version(set, seq)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	idx := make([]*chunk.Index, len(v.Images))
	for i, im := range v.Images {
		if idx[i], err = r.Index(set, v.Seq, im.Name); err != nil {
			return nil, nil, nil, err
		}
	}
	meta, err := r.Meta(set, v.Seq)
	if err != nil {
		return nil, nil, nil, err
	}
	return v, idx, meta, nil
}

// distinct returns the chunks the indexes use, each once, in the order
// they first appear, and their sizes.
func distinct(idx []*chunk.Index) ([]chunk.ID, []int64) {
	seen := map[chunk.ID]struct{}{}
	var ids []chunk.ID
	var sizes []int64
	for _, x := range idx {
		for _, e := range x.Entries {
			if e.ID == (chunk.ID{}) {
				continue
			}
			if _, ok := seen[e.ID]; ok {
				continue
			}
			seen[e.ID] = struct{}{}
			ids = append(ids, e.ID)
			sizes = append(sizes, e.Length)
		}
	}
	return ids, sizes
}

func sum(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}

// putter is where chunks are copied to.
type putter interface {
	Has(ctx context.Context, id chunk.ID) (bool, error)
	Put(ctx context.Context, id chunk.ID, data []byte) error
}

// copyTo copies the chunks of ids that to lacks from from, verifying each
// (to's Put does), with workers at once. It returns how many it copied and
// their bytes.
func copyTo(ctx context.Context, ids []chunk.ID, from chunkGetter, to putter, workers int) (int, int64, error) {
	if workers <= 0 {
		workers = 4
	}
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan chunk.ID, workers)
	counts := make([]struct {
		n int
		b int64
	}, workers)
	for w := range workers {
		g.Go(func() error {
			for id := range work {
				data, err := from.Get(gctx, id)
				if err != nil {
					return fmt.Errorf("read chunk %s: %w", id.Short(), err)
				}
				// ctx, not gctx: an S3 store uploads a pack a Put fills
				// in the background under the Put's context, which must
				// outlive this group.
				if err := to.Put(ctx, id, data); err != nil {
					return err
				}
				counts[w].n++
				counts[w].b += int64(len(data))
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for _, id := range ids {
			ok, err := to.Has(gctx, id)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			select {
			case work <- id:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	err := g.Wait()
	var n int
	var b int64
	for _, c := range counts {
		n += c.n
		b += c.b
	}
	return n, b, err
}

// chunkStore is where Download stores chunks: a node's pack store, open
// for writing.
type chunkStore interface {
	Has(ctx context.Context, id chunk.ID) (bool, error)
	PutVerified(ctx context.Context, id chunk.ID, data, zstd []byte, raw bool) error
	Sync(ctx context.Context) error
}

// Download copies version seq (the bucket's number; 0: the current one)
// of set from the S3 repository src to the node repository dst, whose
// store, open for writing, is chunks: the chunks dst lacks, fetched in a
// few large GETs and verified, then the version, committed with its
// digest, parent and node. The version becomes dst's head on a
// fast-forward (or with opt.Force); otherwise it is kept, and the error is
// repo.ErrDiverged with the Stats filled in.
func Download(ctx context.Context, src *s3versions.Sets, set string, seq uint64, dst *repo.Repo, chunks chunkStore, opt Options) (Stats, error) {
	h, err := src.Head(ctx, set)
	if err != nil {
		return Stats{}, err
	}
	e, ok := h.CurrentEntry()
	if seq != 0 {
		e, ok = h.BySeq(seq)
	}
	if !ok {
		what := "no current version"
		if seq != 0 {
			what = fmt.Sprintf("no version %d", seq)
		}
		return Stats{}, fmt.Errorf("%s has %s of %s: %w", src.Store().URL(), what, set, repo.ErrNotFound)
	}
	v, idx, meta, err := ReadVersion(ctx, src, h, e)
	if err != nil {
		return Stats{}, err
	}
	v.From = src.Store().URL()
	st := Stats{Set: set, Digest: v.Digest}
	ids, sizes := distinct(idx)
	st.Chunks, st.Bytes = len(ids), sum(sizes)
	for i := 0; i < len(ids); i += batch {
		part := ids[i:min(i+batch, len(ids))]
		var lack []chunk.ID
		for _, id := range part {
			ok, err := chunks.Has(ctx, id)
			if err != nil {
				return st, err
			}
			if !ok {
				lack = append(lack, id)
			}
		}
		err := src.Store().Fetch(ctx, lack, func(id chunk.ID, data, zstd []byte, raw bool) error {
			st.Copied++
			st.CopiedBytes += int64(len(data))
			return chunks.PutVerified(ctx, id, data, zstd, raw)
		})
		if err != nil {
			return st, fmt.Errorf("download %s %s from %s: %w", set, v.Digest.Short(), src.Store().URL(), err)
		}
	}
	if err := chunks.Sync(ctx); err != nil {
		return st, err
	}
	var lineage []repo.Link
	for d := e.Parent; d != (chunk.ID{}) && len(lineage) < maxLineage; {
		pe, ok := h.ByDigest(d)
		if !ok {
			break
		}
		lineage = append(lineage, repo.Link{Digest: repo.Digest(pe.Digest), Parent: repo.Digest(pe.Parent)})
		d = pe.Parent
	}
	c, err := dst.Commit(ctx, v, idx, meta, repo.CommitOptions{Force: opt.Force, Lineage: lineage})
	if c != nil {
		st.Seq, st.Existed = c.Version.Seq, c.Existed
		st.Current = c.Head != nil && c.Head.Digest == v.Digest
	}
	return st, err
}

// ReadVersion reads the version e of the head h and checks that its record,
// indexes and metadata are what its digest says.
func ReadVersion(ctx context.Context, src *s3versions.Sets, h *s3versions.Head, e s3versions.Entry) (*repo.Version, []*chunk.Index, []byte, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("version %d of %s in %s: %s: %w", e.Seq, h.Set, src.Store().URL(), fmt.Sprintf(format, a...), repo.ErrBadVersion)
	}
	rec, err := src.Record(ctx, h.Set, e)
	if err != nil {
		return nil, nil, nil, err
	}
	v, err := DecodeRecord(rec, h.Set, e.Digest, e.Parent)
	if err != nil {
		return nil, nil, nil, bad("%v", err)
	}
	if len(v.Images) != len(e.Images) {
		return nil, nil, nil, bad("%d images in the record, %d in the head", len(v.Images), len(e.Images))
	}
	idx := make([]*chunk.Index, len(v.Images))
	for i, im := range v.Images {
		if idx[i], err = src.Index(ctx, h.Set, e, im.Name); err != nil {
			return nil, nil, nil, err
		}
		d, _, err := repo.IndexDigest(idx[i])
		if err != nil {
			return nil, nil, nil, err
		}
		if d != im.Index || idx[i].Size != im.Size {
			return nil, nil, nil, bad("image %s's index does not match the record", im.Name)
		}
	}
	meta, err := src.Meta(ctx, h.Set, e)
	if err != nil {
		return nil, nil, nil, err
	}
	return v, idx, meta, nil
}
