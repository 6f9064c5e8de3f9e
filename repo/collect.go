package repo

import (
	"context"
	"fmt"

	"github.com/ntc-project/ntc/chunk"
)

// minDead is the share of a pack's bytes that must be dead before a
// collection copies its live chunks elsewhere to give the rest back.
const minDead = 0.5

// LiveChunks returns the IDs of the chunks that some committed version of
// some set refers to.
func (r *Repo) LiveChunks(ctx context.Context) (map[chunk.ID]struct{}, error) {
	sets, err := r.Sets()
	if err != nil {
		return nil, err
	}
	live := map[chunk.ID]struct{}{}
	for _, set := range sets {
		vs, err := r.Versions(set)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			for _, im := range v.Images {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				x, err := r.Index(set, v.Seq, im.Name)
				if err != nil {
					return nil, err
				}
				for _, e := range x.Entries {
					live[e.ID] = struct{}{}
				}
			}
		}
	}
	return live, nil
}

// Collect drops from st, the repository's store open for writing, every
// chunk that no committed version of any set refers to, and gives back the
// space of packs that are mostly such chunks (chunk.PackStore.Compact).
// It is the one garbage collection of a node: what it captured and what it
// received share the store. The caller holds st, so no other process is
// storing chunks that a commit to come would refer to; within the process,
// the caller keeps its own writers out (a receiver's pushes).
func (r *Repo) Collect(ctx context.Context, st *chunk.PackStore) (chunk.CompactStats, error) {
	live, err := r.LiveChunks(ctx)
	if err != nil {
		return chunk.CompactStats{}, fmt.Errorf("collect garbage: %w", err)
	}
	cs, err := st.Compact(ctx, func(id chunk.ID) bool {
		_, ok := live[id]
		return ok
	}, minDead)
	if err != nil {
		return cs, fmt.Errorf("collect garbage: %w", err)
	}
	return cs, nil
}
