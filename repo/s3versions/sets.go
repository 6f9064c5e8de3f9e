package s3versions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/repo"
)

// Sets are the sets of versions kept beside a store's chunks.
type Sets struct {
	store *s3store.Store
	refs  *s3store.Refs
	blobs *s3store.Blobs
	// hook, if set, is called at the points where tests interleave a
	// commit and a collection: "ensured" (a commit's chunks checked, its
	// head not swapped yet), "condemned" and "barrier" (a collection's).
	hook func(point string)
}

func (s *Sets) at(point string) {
	if s.hook != nil {
		s.hook(point)
	}
}

// New returns the sets kept in store's bucket and prefix.
func New(store *s3store.Store) *Sets {
	return &Sets{store: store, refs: store.Refs(), blobs: store.Blobs()}
}

// Store returns the chunk store the versions use.
func (s *Sets) Store() *s3store.Store { return s.store }

// Version is what Commit stores: bytes it is given, and the two digests
// that place the version in its set's lineage.
type Version struct {
	// Digest is the version's identity (what repo.Version.Digest is), and
	// Parent its parent's (zero for a first version).
	Digest, Parent chunk.ID
	// Record is the version's record (its version.json).
	Record []byte
	// Indexes are the encoded chunk.Index of each image, by name.
	Indexes []Index
	// Meta is its metadata; nil for none.
	Meta []byte
}

// Index is one image's encoded chunk.Index.
type Index struct {
	Name string
	Data []byte
}

// Limits on what is read back.
const (
	maxRecordLen = 16 << 20
	maxIndexLen  = 512 << 20
	maxMetaLen   = 64 << 20
)

func headName(set string) string { return "sets/" + set + "/head" }

func blobDir(set, key string) string { return "sets/" + set + "/v/" + key + "/" }

// ErrExists reports a commit of a version the set already holds.
var ErrExists = errors.New("version already committed")

// Head reads a set's head. A set without one has an empty head that does
// not exist yet (Exists is false), from which a first commit starts.
func (s *Sets) Head(ctx context.Context, set string) (*Head, error) {
	if err := repo.CheckName(set); err != nil {
		return nil, err
	}
	r, err := s.refs.Read(ctx, headName(set))
	if errors.Is(err, s3store.ErrNotFound) {
		return &Head{Set: set, Next: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read head of %s: %w", set, err)
	}
	h, err := decodeHead(set, r.Data)
	if err != nil {
		return nil, err
	}
	h.etag = r.ETag
	return h, nil
}

// Names returns the names of the sets that have a head.
func (s *Sets) Names(ctx context.Context) ([]string, error) {
	var out []string
	err := s.refs.List(ctx, "sets/", func(name string) error {
		set, ok := strings.CutSuffix(strings.TrimPrefix(name, "sets/"), "/head")
		if ok && repo.CheckName(set) == nil {
			out = append(out, set)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	return out, nil
}

// CommitOptions say how a commit changes the head besides adding the
// version.
type CommitOptions struct {
	// MakeCurrent makes the version the set's current one.
	MakeCurrent bool
}

// Commit stores v in base's set and adds it to the head, if the head is
// still base: it makes sure every chunk v's indexes use is stored and out
// of reach of a collection under way (else an error that is a
// *s3store.MissingError: store those chunks, then commit again), writes
// v's objects, then swaps the head. If anybody changed the head since base
// was read, nothing is visible and the error is s3store.ErrConflict: read
// the head again, decide again (is it still a fast-forward?), commit
// again. A version the head already lists is ErrExists. It returns the new
// head.
//
// The first commit of a set creates the set's head empty, then swaps it:
// a collection's rule needs the head to exist before the chunks are
// checked. Of receivers racing to make a set, the one that created the
// head may lose its swap to one that read it after.
func (s *Sets) Commit(ctx context.Context, base *Head, v Version, opt CommitOptions) (*Head, error) {
	set := base.Set
	ids, err := check(v)
	if err != nil {
		return nil, fmt.Errorf("commit %s to %s: %w", v.Digest.Short(), set, err)
	}
	if _, ok := base.ByDigest(v.Digest); ok {
		return nil, fmt.Errorf("commit %s to %s: %w", v.Digest.Short(), set, ErrExists)
	}
	if len(base.Versions) >= maxVersions {
		return nil, fmt.Errorf("commit %s to %s: the set holds %d versions, the most a head lists: remove some", v.Digest.Short(), set, maxVersions)
	}
	if !base.Exists() {
		// The head must exist before the chunks are checked (gc.go's
		// rule): create it empty, then commit from it.
		empty := &Head{Set: set, Next: 1}
		data, _ := empty.encode()
		r, err := s.refs.Create(ctx, headName(set), data)
		if err != nil {
			return nil, fmt.Errorf("commit %s: create the head of %s: %w", v.Digest.Short(), set, err)
		}
		empty.etag = r.ETag
		base = empty
	}
	if err := s.store.Ensure(ctx, ids); err != nil {
		return nil, fmt.Errorf("commit %s to %s: %w", v.Digest.Short(), set, err)
	}
	s.at("ensured")
	e := Entry{Seq: base.Next, Digest: v.Digest, Parent: v.Parent, Meta: v.Meta != nil, key: newKey(v.Digest)}
	dir := blobDir(set, e.key)
	put := func(name string, data []byte) error {
		if err := s.blobs.Create(ctx, dir+name, data); err != nil {
			return fmt.Errorf("commit %s to %s: %w", v.Digest.Short(), set, err)
		}
		return nil
	}
	for _, x := range v.Indexes {
		e.Images = append(e.Images, x.Name)
		if err := put("index/"+x.Name, x.Data); err != nil {
			return nil, err
		}
	}
	if v.Meta != nil {
		if err := put("meta", v.Meta); err != nil {
			return nil, err
		}
	}
	if err := put("record", v.Record); err != nil {
		return nil, err
	}
	next := base.clone()
	next.Versions = append(next.Versions, e)
	next.Next++
	if opt.MakeCurrent {
		next.Current = e.Seq
	}
	return s.swap(ctx, base, next, "commit "+v.Digest.Short()+" to "+set)
}

// check validates v and returns the chunks its indexes use.
func check(v Version) ([]chunk.ID, error) {
	if v.Digest == (chunk.ID{}) {
		return nil, errors.New("no digest")
	}
	if len(v.Record) == 0 || len(v.Record) > maxRecordLen {
		return nil, fmt.Errorf("record of %d bytes, want 1 to %d", len(v.Record), maxRecordLen)
	}
	if len(v.Meta) > maxMetaLen {
		return nil, fmt.Errorf("metadata of %d bytes, over %d", len(v.Meta), maxMetaLen)
	}
	names := make([]string, len(v.Indexes))
	for i, x := range v.Indexes {
		names[i] = x.Name
	}
	if err := checkImages(names); err != nil {
		return nil, err
	}
	seen := map[chunk.ID]bool{}
	var ids []chunk.ID
	for _, x := range v.Indexes {
		if len(x.Data) > maxIndexLen {
			return nil, fmt.Errorf("index of %s: %d bytes, over %d", x.Name, len(x.Data), maxIndexLen)
		}
		var idx chunk.Index
		if err := idx.UnmarshalBinary(x.Data); err != nil {
			return nil, fmt.Errorf("index of %s: %w", x.Name, err)
		}
		for _, en := range idx.Entries {
			if !en.Zero && !seen[en.ID] {
				seen[en.ID] = true
				ids = append(ids, en.ID)
			}
		}
	}
	return ids, nil
}

// swap replaces the head base with next. A lost answer is settled by
// reading the head back.
func (s *Sets) swap(ctx context.Context, base, next *Head, what string) (*Head, error) {
	data, write := next.encode()
	r, err := s.refs.Swap(ctx, headName(base.Set), s3store.Ref{ETag: base.etag}, data)
	if errors.Is(err, s3store.ErrUnknownOutcome) {
		if again, rerr := s.refs.Read(ctx, headName(base.Set)); rerr == nil && bytes.Contains(again.Data, []byte(`"write":"`+write+`"`)) {
			r, err = again, nil
		}
	}
	if errors.Is(err, s3store.ErrNotFound) {
		err = fmt.Errorf("%w: the head was removed (%w)", s3store.ErrConflict, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	next.etag = r.ETag
	return next, nil
}

// SetCurrent makes version seq current, if the head is still base.
func (s *Sets) SetCurrent(ctx context.Context, base *Head, seq uint64) (*Head, error) {
	if _, ok := base.BySeq(seq); !ok {
		return nil, fmt.Errorf("set current version of %s: no version %d", base.Set, seq)
	}
	next := base.clone()
	next.Current = seq
	return s.swap(ctx, base, next, fmt.Sprintf("set current version of %s", base.Set))
}

// Remove drops version seq from the head, if the head is still base; its
// objects, and the chunks only it used, go at the next Collect. Removing
// the current version leaves the set without one.
func (s *Sets) Remove(ctx context.Context, base *Head, seq uint64) (*Head, error) {
	i := slices.IndexFunc(base.Versions, func(e Entry) bool { return e.Seq == seq })
	if i < 0 {
		return nil, fmt.Errorf("remove version %d of %s: not listed", seq, base.Set)
	}
	next := base.clone()
	next.Versions = slices.Delete(next.Versions, i, i+1)
	if next.Current == seq {
		next.Current = 0
	}
	return s.swap(ctx, base, next, fmt.Sprintf("remove version %d of %s", seq, base.Set))
}

// Record reads a version's record.
func (s *Sets) Record(ctx context.Context, set string, e Entry) ([]byte, error) {
	return s.blobs.Get(ctx, blobDir(set, e.key)+"record", maxRecordLen)
}

// Meta reads a version's metadata; nil if it has none.
func (s *Sets) Meta(ctx context.Context, set string, e Entry) ([]byte, error) {
	if !e.Meta {
		return nil, nil
	}
	return s.blobs.Get(ctx, blobDir(set, e.key)+"meta", maxMetaLen)
}

// Index reads and decodes the index of a version's image.
func (s *Sets) Index(ctx context.Context, set string, e Entry, image string) (*chunk.Index, error) {
	if !slices.Contains(e.Images, image) {
		return nil, fmt.Errorf("index of %s in version %d of %s: no such image", image, e.Seq, set)
	}
	b, err := s.blobs.Get(ctx, blobDir(set, e.key)+"index/"+image, maxIndexLen)
	if err != nil {
		return nil, fmt.Errorf("index of %s in version %d of %s: %w", image, e.Seq, set, err)
	}
	var x chunk.Index
	if err := x.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("index of %s in version %d of %s: %w", image, e.Seq, set, err)
	}
	return &x, nil
}
