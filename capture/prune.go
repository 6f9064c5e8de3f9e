package capture

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/ntc-project/ntc/chunk"
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
// Prune frees only the checkpoints' directories (their indexes), not the
// chunks they referenced: the store keeps every chunk (no garbage
// collection yet). The repository must be open for writing (OpenRepository),
// so that no checkpoint is being taken.
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
		if err := os.RemoveAll(dir); err != nil {
			return removed, fmt.Errorf("prune checkpoint %d: %w", s, err)
		}
		removed = append(removed, s)
	}
	return removed, nil
}
