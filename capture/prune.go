package capture

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
)

// Prune removes old complete checkpoints: it keeps the newest keep (at
// least one), every checkpoint in pinned (say, the one a receiver last
// acknowledged, which later pushes patch against), and the checkpoint each
// disk's overlay chain continues (state.json). It returns the removed
// checkpoints' numbers, oldest first.
//
// A checkpoint goes in two steps: its manifest first, which makes it
// incomplete (readers no longer see it), then its directory; if ntc dies in
// between, the next checkpoint removes the rest. A checkpoint whose parent
// was pruned still pushes in full: Repository.ChangedSince then finds no
// chain of recorded changes to the receiver's copy.
//
// Prune frees only the checkpoints' directories (their indexes); Collect
// then drops the chunks no remaining checkpoint refers to. The repository
// must be open for writing (OpenRepository), so that no checkpoint is
// being taken.
func (r *Repository) Prune(keep int, pinned ...int) ([]int, error) {
	if r.packs == nil {
		return nil, fmt.Errorf("prune checkpoint repository %s: %w", r.dir, chunk.ErrReadOnly)
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
	var removed []int
	for _, s := range seqs[:len(seqs)-keep] {
		if slices.Contains(pinned, s) {
			continue
		}
		dir := r.CheckpointDir(s)
		if err := os.Remove(filepath.Join(dir, manifestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("prune checkpoint %d: %w", s, err)
		}
		// Incomplete for good before Collect drops any chunk of it.
		if err := atomicfile.SyncDir(dir); err != nil {
			return removed, fmt.Errorf("prune checkpoint %d: %w", s, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			return removed, fmt.Errorf("prune checkpoint %d: %w", s, err)
		}
		removed = append(removed, s)
	}
	return removed, nil
}

// collectMinDead is the share of a pack's bytes that must be dead before
// Collect copies its live chunks elsewhere to give the rest back.
const collectMinDead = 0.5

// Collect drops from the store every chunk that no complete checkpoint
// refers to (those of pruned checkpoints, and of checkpoints that never
// completed), and gives back the space of packs that are mostly such
// chunks (chunk.PackStore.Compact). Readers that opened the repository
// before (a push in progress) go on reading what they saw. The repository
// must be open for writing.
func (r *Repository) Collect(ctx context.Context) (chunk.CompactStats, error) {
	if r.packs == nil {
		return chunk.CompactStats{}, fmt.Errorf("collect checkpoint repository %s: %w", r.dir, chunk.ErrReadOnly)
	}
	seqs, err := r.Checkpoints()
	if err != nil {
		return chunk.CompactStats{}, err
	}
	live := map[chunk.ID]struct{}{}
	for _, seq := range seqs {
		if err := ctx.Err(); err != nil {
			return chunk.CompactStats{}, err
		}
		m, err := r.Manifest(seq)
		if err != nil {
			return chunk.CompactStats{}, err
		}
		names := []string{m.DeviceState.Index, m.Stream.Index}
		for _, d := range m.Disks {
			names = append(names, d.Index)
		}
		for _, b := range m.RAM {
			names = append(names, b.Index)
		}
		for _, name := range names {
			if name == "" {
				continue
			}
			x, err := r.Index(seq, name)
			if err != nil {
				return chunk.CompactStats{}, err
			}
			for _, e := range x.Entries {
				live[e.ID] = struct{}{}
			}
		}
	}
	st, err := r.packs.Compact(ctx, func(id chunk.ID) bool {
		_, ok := live[id]
		return ok
	}, collectMinDead)
	if err != nil {
		return st, fmt.Errorf("collect checkpoint repository %s: %w", r.dir, err)
	}
	return st, nil
}
