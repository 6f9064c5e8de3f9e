package s3versions

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
)

// TestCollectWhileCommitting: receivers commit versions made of chunks
// drawn from a shared pool (so versions share chunks, and chunks that only
// removed versions used come back) and remove old versions, while
// collections run one after another. No receiver refreshes its map: each
// trusts what it saw and lets Commit tell it what is missing. At the end
// every version a head lists reads back whole.
func TestCollectWhileCommitting(t *testing.T) {
	b := newBed(t)
	const (
		receivers = 3
		commits   = 40 // each
		keep      = 2  // versions a set keeps
	)
	pool := content(300, 64)
	byID := map[chunk.ID][]byte{}
	for _, c := range pool {
		byID[chunk.Sum(c)] = c
	}
	var (
		mu      sync.Mutex
		made    = map[chunk.ID][][]byte{} // every version committed, by digest
		missing atomic.Int64
		retries atomic.Int64
	)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i := range receivers {
		r := b.receiver(t)
		rnd := rand.New(rand.NewPCG(uint64(i), 7))
		// Between checking its chunks and swapping the head a commit
		// sometimes dawdles, as a slow link would make it: it widens the
		// window a collection has to get in between (the race this test
		// is about), it does not wait for anything.
		r.hook = func(p string) {
			if p == "ensured" && rnd.IntN(3) == 0 {
				time.Sleep(time.Duration(rnd.IntN(400)) * time.Millisecond)
			}
		}
		wg.Go(func() {
			for k := range commits {
				set := fmt.Sprintf("vm%d", rnd.IntN(2))
				var chunks [][]byte
				for _, j := range rnd.Perm(len(pool))[:4] {
					chunks = append(chunks, pool[j])
				}
				for _, c := range chunks {
					if ok, _ := r.Store().Has(t.Context(), chunk.Sum(c)); !ok {
						if err := r.Store().Put(t.Context(), chunk.Sum(c), c); err != nil {
							t.Error(err)
							return
						}
					}
				}
				if err := commitUntilLanded(t, r, set, fmt.Sprintf("%d/%d", i, k), chunks, byID, &mu, made, &missing, &retries, keep); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	collections, deleted, rewritten := 0, 0, 0
	var collErr error
	finished := stop(&wg)
	go func() {
		defer close(done)
		c := b.receiver(t)
		for {
			select {
			case <-finished:
				return
			default:
			}
			// Every other one also rewrites packs a third wasted.
			st, err := c.Collect(t.Context(), CollectOptions{Rewrite: float64(collections%2) / 3})
			if err != nil {
				collErr = err
				return
			}
			collections++
			deleted += st.Deleted
			rewritten += st.Rewritten
		}
	}()
	wg.Wait()
	<-done
	if collErr != nil {
		t.Fatal(collErr)
	}
	r := b.receiver(t)
	listed := 0
	for _, set := range []string{"vm0", "vm1"} {
		listed += len(checkAllListed(t, r, set, made).Versions)
	}
	if collections == 0 || listed == 0 {
		t.Fatalf("%d collections, %d versions listed", collections, listed)
	}
	t.Logf("%d commits, %d collections deleting %d packs (%d rewritten), %d versions listed at the end; %d commits told of missing chunks, %d conflicts",
		len(made), collections, deleted, rewritten, listed, missing.Load(), retries.Load())
}

// stop returns a channel closed once wg's goroutines are done.
func stop(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		wg.Wait()
		close(ch)
	}()
	return ch
}

// commitUntilLanded commits a version of chunks to set, storing again what
// Commit says is missing and starting again from the head on a conflict,
// then removes the set's versions beyond the newest keep.
func commitUntilLanded(t *testing.T, r *Sets, set, what string, chunks [][]byte, byID map[chunk.ID][]byte,
	mu *sync.Mutex, made map[chunk.ID][][]byte, missing, retries *atomic.Int64, keep int) error {
	for range 100 {
		h, err := r.Head(t.Context(), set)
		if err != nil {
			return err
		}
		var parent chunk.ID
		if e, ok := h.CurrentEntry(); ok {
			parent = e.Digest
		}
		v := version(t, set, parent, what, chunks)
		h, err = r.Commit(t.Context(), h, v, CommitOptions{MakeCurrent: true})
		var me *s3store.MissingError
		switch {
		case err == nil:
			mu.Lock()
			made[v.Digest] = chunks
			mu.Unlock()
			for len(h.Versions) > keep {
				next, err := r.Remove(t.Context(), h, h.Versions[0].Seq)
				if errors.Is(err, s3store.ErrConflict) {
					break // another receiver's commit or a barrier: prune next time
				}
				if err != nil {
					return err
				}
				h = next
			}
			return nil
		case errors.As(err, &me):
			missing.Add(1)
			for _, id := range me.IDs {
				if err := r.Store().Put(t.Context(), id, byID[id]); err != nil {
					return err
				}
			}
		case errors.Is(err, s3store.ErrConflict):
			retries.Add(1)
		default:
			return err
		}
	}
	return fmt.Errorf("commit %s to %s: no end of retries", what, set)
}
