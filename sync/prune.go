package sync

import (
	"context"
	"fmt"
	gosync "sync"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

// Versions are thinned as a node repository's are (repo.Thin).
var _ repo.Thinnable = Versions(nil)

// prune thins the set's versions by policy p (repo.Thin, which also
// keeps the current version and the tips of copies that diverged from
// it), keeping too the versions the set's image files hold or are being
// moved to (materializing needs both). It works on Versions, so on a
// repository in a bucket too. The caller holds the set's lock. It returns
// the versions removed, oldest first.
func (r *Repo) prune(ctx context.Context, set string, p repo.Policy) ([]uint64, error) {
	if p.IsZero() {
		return nil, nil
	}
	st := r.readState(set)
	removed, err := repo.Thin(ctx, r.nodes, set, func(vs []*repo.Version) []bool {
		keep := p.KeepVersions(vs)
		for i, v := range vs {
			keep[i] = keep[i] || v.Seq == st.Version || v.Seq == st.Applying
		}
		return keep
	})
	if err != nil {
		return removed, fmt.Errorf("prune: %w", err)
	}
	return removed, nil
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
	release, err := r.holdStore(ctx)
	if err != nil {
		return st, true, fmt.Errorf("collect garbage: %w", err)
	}
	defer release()
	if st, err = r.nodes.Collect(ctx, r.store); err != nil {
		return st, true, err
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
