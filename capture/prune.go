package capture

import (
	"context"
	"fmt"
	"slices"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

// Prune removes old checkpoints of the set: it keeps the newest keep (at
// least one), every checkpoint in pinned (say, the one a receiver last
// acknowledged, which later pushes patch against), and the checkpoint
// each disk's overlay chain continues (state.json); repo.Thin, which does
// the removing, keeps the current one and the tip of a diverged copy. It
// returns the removed checkpoints' numbers, oldest first.
//
// A checkpoint goes at once. A checkpoint whose parent was pruned still
// pushes in full: Repository.ChangedSince then finds no chain of recorded
// changes to the receiver's copy.
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
	removed, err := r.nodes.Thin(ctx, r.set, func(vs []*repo.Version) []bool {
		kept := make([]bool, len(vs))
		for i, v := range vs {
			kept[i] = i >= len(vs)-keep || slices.Contains(pinned, int(v.Seq))
		}
		return kept
	})
	var out []int
	for _, s := range removed {
		out = append(out, int(s))
	}
	if err != nil {
		return out, fmt.Errorf("prune checkpoints: %w", err)
	}
	if err := r.removeChanges(); err != nil {
		return out, fmt.Errorf("prune %s: %w", r.set, err)
	}
	return out, nil
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
