package sync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	gosync "sync"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
)

// minDead is the share of a pack's bytes that must be dead before a
// collection copies its live chunks elsewhere to give the rest back.
const minDead = 0.5

// prune removes all but the newest keep committed versions of set. It
// never removes the current version, nor the versions the set's image
// files hold or are being moved to (materializing needs both). The caller
// holds the set's lock. Each version directory is first renamed into
// DIR/tmp, so a crash never leaves a half-removed version among the
// committed ones. It returns the versions removed, oldest first.
func (r *Repo) prune(set string, keep int) ([]uint64, error) {
	if keep < 1 {
		return nil, nil
	}
	sets, err := r.List()
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(sets, func(s SetInfo) bool { return s.Set == set })
	if i < 0 || len(sets[i].Versions) <= keep {
		return nil, nil
	}
	si := sets[i]
	st := r.readState(set)
	protected := func(v uint64) bool {
		return (si.Current != nil && v == si.Current.Version) || v == st.Version || v == st.Applying
	}
	var removed []uint64
	old := si.Versions[:len(si.Versions)-keep]
	for _, v := range old {
		if protected(v) {
			continue
		}
		src := filepath.Join(r.dir, "sets", set, versionDir(v))
		tmp, err := os.MkdirTemp(filepath.Join(r.dir, "tmp"), "pruned-")
		if err != nil {
			return removed, fmt.Errorf("prune %s: %w", set, err)
		}
		dst := filepath.Join(tmp, versionDir(v))
		if err := os.Rename(src, dst); err != nil {
			os.Remove(tmp)
			return removed, fmt.Errorf("prune %s v%d: %w", set, v, err)
		}
		if err := os.RemoveAll(tmp); err != nil {
			return removed, fmt.Errorf("prune %s v%d: %w", set, v, err)
		}
		removed = append(removed, v)
	}
	if len(removed) > 0 {
		// Gone for good before any chunk of theirs is.
		if err := atomicfile.SyncDir(filepath.Join(r.dir, "sets", set)); err != nil {
			return removed, fmt.Errorf("prune %s: %w", set, err)
		}
	}
	return removed, nil
}

// liveChunks returns the IDs of the chunks that some committed version of
// some set refers to.
func (r *Repo) liveChunks(ctx context.Context) (map[chunk.ID]struct{}, error) {
	sets, err := r.List()
	if err != nil {
		return nil, err
	}
	live := map[chunk.ID]struct{}{}
	for _, si := range sets {
		for _, v := range si.Versions {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			m, err := r.Manifest(si.Set, v)
			if err != nil {
				return nil, err
			}
			for _, im := range m.Images {
				x, err := r.Index(si.Set, v, im.Name)
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

// collect drops from the store every chunk that no committed version
// refers to, and gives back the space of packs that are mostly such
// chunks. It runs only while no push is in progress (ok is false, and
// nothing is done, when one is): a push decides which chunks it needs from
// what the store holds, and those chunks are referenced only once it
// commits. Chunks that a push interrupted before its commit had stored are
// dropped too, so such a push, resumed after a collection, sends them
// again.
func (r *Repo) collect(ctx context.Context) (st chunk.CompactStats, ok bool, err error) {
	end, ok := r.gate.tryCollect()
	if !ok {
		return st, false, nil
	}
	defer end()
	live, err := r.liveChunks(ctx)
	if err != nil {
		return st, true, fmt.Errorf("collect garbage: %w", err)
	}
	st, err = r.store.Compact(ctx, func(id chunk.ID) bool {
		_, ok := live[id]
		return ok
	}, minDead)
	if err != nil {
		return st, true, fmt.Errorf("collect garbage: %w", err)
	}
	return st, true, nil
}

// pushGate lets pushes in together, and a garbage collection in alone: a
// collection starts only when no push is in progress, and a push waits
// (for as long as its context allows) while one runs.
type pushGate struct {
	mu      gosync.Mutex
	pushes  int
	collect bool
	done    chan struct{} // closed when the running collection ends
}

// enter lets a push in, once no collection runs; leave lets it out.
func (g *pushGate) enter(ctx context.Context) (leave func(), err error) {
	for {
		g.mu.Lock()
		if !g.collect {
			g.pushes++
			g.mu.Unlock()
			return func() {
				g.mu.Lock()
				g.pushes--
				g.mu.Unlock()
			}, nil
		}
		done := g.done
		g.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tryCollect lets a collection in if no push is in progress.
func (g *pushGate) tryCollect() (end func(), ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pushes > 0 || g.collect {
		return nil, false
	}
	g.collect, g.done = true, make(chan struct{})
	return func() {
		g.mu.Lock()
		g.collect = false
		close(g.done)
		g.mu.Unlock()
	}, true
}
