package repo

import (
	"context"
	"fmt"
)

// Thinnable is what Thin reads and removes versions through: a node
// repository in a directory (Repo.Thin) or one kept elsewhere (a bucket's,
// repo/s3repo), whose methods take a context because their reads are
// requests.
type Thinnable interface {
	// Versions returns the set's versions, oldest first.
	Versions(ctx context.Context, set string) ([]*Version, error)
	// Head returns the set's current version, nil when it has none.
	Head(ctx context.Context, set string) (*Version, error)
	// Diverged returns the tips of copies that ran apart from the head.
	Diverged(ctx context.Context, set string) ([]*Version, error)
	// Remove removes a version that is not the head.
	Remove(ctx context.Context, set string, seq uint64) error
}

// Keep chooses, among a set's versions (oldest first), those to keep, by
// position: what a caller pins (the newest few, what a policy keeps, what
// a peer acknowledged, what files on disk hold). Thin keeps more.
type Keep func(vs []*Version) []bool

// Thin removes the set's versions that keep does not keep, oldest first,
// and returns their numbers. Whatever keep says, it never removes the
// head, nor the tip of a copy that diverged from it (it stays until
// someone chooses, SetHead), and it removes nothing from a set with no
// head: what is current there is unsure. A version goes at once
// (Remove); its chunks stay until a collection (Collect). On an error the
// versions already removed are returned with it.
func Thin(ctx context.Context, t Thinnable, set string, keep Keep) ([]uint64, error) {
	vs, err := t.Versions(ctx, set)
	if err != nil {
		return nil, fmt.Errorf("thin %s: %w", set, err)
	}
	head, err := t.Head(ctx, set)
	if err != nil || head == nil {
		return nil, err
	}
	div, err := t.Diverged(ctx, set)
	if err != nil {
		return nil, fmt.Errorf("thin %s: %w", set, err)
	}
	kept := keep(vs)
	if len(kept) != len(vs) {
		return nil, fmt.Errorf("thin %s: %d choices for %d versions", set, len(kept), len(vs))
	}
	spared := map[Digest]bool{head.Digest: true}
	for _, v := range div {
		spared[v.Digest] = true
	}
	var removed []uint64
	for i, v := range vs {
		if kept[i] || spared[v.Digest] {
			continue
		}
		if err := t.Remove(ctx, set, v.Seq); err != nil {
			return removed, fmt.Errorf("thin %s: %w", set, err)
		}
		removed = append(removed, v.Seq)
	}
	return removed, nil
}

// Thin is Thin on the repository.
func (r *Repo) Thin(ctx context.Context, set string, keep Keep) ([]uint64, error) {
	return Thin(ctx, withContext{r}, set, keep)
}

// withContext gives a Repo the methods Thinnable names: its reads take no
// context (they are local files).
type withContext struct{ r *Repo }

func (w withContext) Versions(_ context.Context, set string) ([]*Version, error) {
	return w.r.Versions(set)
}
func (w withContext) Head(_ context.Context, set string) (*Version, error) { return w.r.Head(set) }
func (w withContext) Diverged(_ context.Context, set string) ([]*Version, error) {
	return w.r.Diverged(set)
}
func (w withContext) Remove(ctx context.Context, set string, seq uint64) error {
	return w.r.Remove(ctx, set, seq)
}
