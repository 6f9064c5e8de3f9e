package capture

import (
	"context"
	"fmt"
	"slices"

	"github.com/ntc-project/ntc/chunk"
)

// Prune removes old checkpoints of the set: it keeps the newest keep (at
// least one), the current one, every checkpoint in pinned (say, the one a
// receiver last acknowledged, which later pushes patch against), and the
// checkpoint each disk's overlay chain continues (state.json). It returns
// the removed checkpoints' numbers, oldest first.
//
// A checkpoint goes at once (repo.Repo.Remove). A checkpoint whose parent
// was pruned still pushes in full: Repository.ChangedSince then finds no
// chain of recorded changes to the receiver's copy.
//
// Prune frees only the checkpoints' indexes; Collect then drops the chunks
// no remaining version refers to. The repository must be open for writing
// (OpenRepository), so that no checkpoint of the set is being taken.
func (r *Repository) Prune(ctx context.Context, keep int, pinned ...int) ([]int, error) {
	if r.packs == nil {
		return nil, fmt.Errorf("prune %s in %s: %w", r.set, r.Dir(), chunk.ErrReadOnly)
	}
	seqs, err := r.Checkpoints()
	if err != nil {
		return nil, err
	}
	keep = max(keep, 1)
	if len(seqs) <= keep {
		return nil, nil
	}
	st, err := r.loadState()
	if err != nil {
		return nil, err
	}
	if st != nil {
		for _, d := range st.Disks {
			pinned = append(pinned, d.Seq)
		}
	}
	if head, err := r.nodes.Head(r.set); err != nil {
		return nil, err
	} else if head != nil {
		pinned = append(pinned, int(head.Seq))
	}
	var removed []int
	for _, s := range seqs[:len(seqs)-keep] {
		if slices.Contains(pinned, s) {
			continue
		}
		if err := r.nodes.Remove(ctx, r.set, uint64(s)); err != nil {
			return removed, fmt.Errorf("prune checkpoint %d: %w", s, err)
		}
		removed = append(removed, s)
	}
	if err := r.removeChanges(); err != nil {
		return removed, fmt.Errorf("prune %s: %w", r.set, err)
	}
	return removed, nil
}

// Collect drops from the node's store every chunk that no version of any
// set refers to (repo.Repo.Collect). Readers that opened the repository
// before (a push in progress) go on reading what they saw. The repository
// must be open for writing.
func (r *Repository) Collect(ctx context.Context) (chunk.CompactStats, error) {
	if r.packs == nil {
		return chunk.CompactStats{}, fmt.Errorf("collect %s: %w", r.Dir(), chunk.ErrReadOnly)
	}
	return r.nodes.Collect(ctx, r.packs)
}
