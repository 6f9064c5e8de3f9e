package s3versions

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/s3test"
)

// fleet is a fleet of VMs cloned from one golden image, pushed by senders
// through receivers sharing one bucket. Version 1 of every VM is the
// golden image plus chunks of its own; later versions add chunks of their
// own and a shared update (the same chunks in every VM, as a package
// upgrade run everywhere), pushed by all senders at once. Each version of
// a VM goes through the next receiver in turn.
type fleet struct {
	senders, receivers, versions int
	golden, own, update          int // chunks
	size                         int // bytes a chunk
	collect                      bool
}

// fleetResult is what a fleet run measured.
type fleetResult struct {
	afterFirst, end s3store.Census
	collected       CollectStats
	afterCollect    s3store.Census
	sent            int64 // chunk bytes the receivers stored (what crossed from senders)
	referenced      int64 // chunk bytes the versions' indexes name, all versions
	commits         int
	conflicts       int64
	requests        *s3test.Counter
	puts, gets      int // requests of the pushes
	elapsed         time.Duration
}

// push is one sender's push of a version of set through receiver r: the
// receiver learns what the other receivers stored (Refresh), stores what
// it lacks, and commits, again from the new head when another commit
// came first.
func push(tb testing.TB, r *Sets, set string, v Version, chunks [][]byte, sent, conflicts *atomic.Int64) error {
	ctx := tb.Context()
	if err := r.Store().Refresh(ctx); err != nil {
		return err
	}
	for _, c := range chunks {
		id := chunk.Sum(c)
		if ok, err := r.Store().Has(ctx, id); err != nil {
			return err
		} else if !ok {
			if err := r.Store().Put(ctx, id, c); err != nil {
				return err
			}
			sent.Add(int64(len(c)))
		}
	}
	for range 20 {
		h, err := r.Head(ctx, set)
		if err != nil {
			return err
		}
		_, err = r.Commit(ctx, h, v, CommitOptions{MakeCurrent: true})
		if !errors.Is(err, s3store.ErrConflict) {
			return err
		}
		conflicts.Add(1)
	}
	return fmt.Errorf("push %s: conflicts without end", set)
}

func runFleet(tb testing.TB, b *bed, f fleet) fleetResult {
	tb.Helper()
	res := fleetResult{requests: &s3test.Counter{}}
	cfg := b.cfg
	cfg.Transport = res.requests
	rs := make([]*Sets, f.receivers)
	for i := range rs {
		st, err := s3store.Open(tb.Context(), cfg)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { st.Close() })
		rs[i] = New(st)
	}
	golden := chunksOf(1000, f.golden, f.size)
	update := chunksOf(2000, f.update, f.size)
	var sent, conflicts atomic.Int64
	start := time.Now()
	if err := push(tb, rs[0], "golden", version(tb, "golden", chunk.ID{}, "golden", golden), golden, &sent, &conflicts); err != nil {
		tb.Fatal(err)
	}
	res.referenced += int64(len(golden) * f.size)
	res.commits++

	type vm struct {
		parent chunk.ID
		all    map[chunk.ID][][]byte
	}
	vms := make([]vm, f.senders)
	var mu sync.Mutex
	round := func(k int) {
		var wg sync.WaitGroup
		for i := range f.senders {
			wg.Go(func() {
				set := fmt.Sprintf("vm%02d", i)
				chunks := append(append([][]byte{}, golden...), chunksOf(uint64(10000+100*i+k), f.own, f.size)...)
				if k > 1 {
					chunks = append(chunks, update...)
				}
				v := version(tb, set, vms[i].parent, fmt.Sprint(k), chunks)
				if err := push(tb, rs[(i+k)%f.receivers], set, v, chunks, &sent, &conflicts); err != nil {
					tb.Errorf("sender %d, version %d: %v", i, k, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if vms[i].all == nil {
					vms[i].all = map[chunk.ID][][]byte{}
				}
				vms[i].parent = v.Digest
				vms[i].all[v.Digest] = chunks
				res.referenced += int64(len(chunks) * f.size)
				res.commits++
			})
		}
		wg.Wait()
		if tb.Failed() {
			tb.FailNow()
		}
	}
	census := func() s3store.Census {
		c, err := b.receiver(tb).Store().Census(tb.Context())
		if err != nil {
			tb.Fatal(err)
		}
		return c
	}
	round(1)
	res.afterFirst = census()
	for k := 2; k <= f.versions; k++ {
		round(k)
	}
	res.elapsed = time.Since(start)
	res.puts, res.gets = res.requests.Count(http.MethodPut), res.requests.Count(http.MethodGet)
	res.end = census()
	if f.collect {
		// A collection that rewrites every pack holding a copy leaves
		// each chunk stored once.
		tick(tb, rs[0])
		st, err := rs[0].Collect(tb.Context(), CollectOptions{Rewrite: 1e-9})
		if err != nil {
			tb.Fatal(err)
		}
		res.collected, res.afterCollect = st, census()
	}
	res.sent, res.conflicts = sent.Load(), conflicts.Load()

	// Every version of every VM is committed, in order, and whole.
	r := b.receiver(tb)
	for i, m := range vms {
		set := fmt.Sprintf("vm%02d", i)
		h := checkAllListed(tb, r, set, m.all)
		if len(h.Versions) != f.versions || h.Current != uint64(f.versions) {
			tb.Fatalf("%s: %d versions, current %d; want %d, the last", set, len(h.Versions), h.Current, f.versions)
		}
	}
	return res
}

// TestFleet: 10 senders × 2 receivers on one bucket. Every version is
// committed; the golden image and every VM's own chunks are stored once;
// the shared update, pushed by all at once through both receivers, is
// stored at most once by each receiver.
func TestFleet(t *testing.T) {
	f := fleet{senders: 10, receivers: 2, versions: 3, golden: 32, own: 4, update: 8, size: 16 << 10, collect: true}
	res := runFleet(t, newBed(t), f)
	unique := f.golden + f.senders*f.versions*f.own + f.update
	if res.commits != 1+f.senders*f.versions {
		t.Fatalf("%d commits, want %d", res.commits, 1+f.senders*f.versions)
	}
	if c := res.afterFirst; c.Copies != 0 || c.Chunks != f.golden+f.senders*f.own {
		t.Fatalf("after the first versions: %+v; want %d chunks, none twice", c, f.golden+f.senders*f.own)
	}
	if c := res.end; c.Chunks != unique || c.Copies > f.update*(f.receivers-1) {
		t.Fatalf("at the end: %+v; want %d chunks, at most %d stored twice (the update, once a receiver)", c, unique, f.update*(f.receivers-1))
	}
	if c := res.afterCollect; c.Chunks != unique || c.Copies != 0 || res.collected.Deleted == 0 {
		t.Fatalf("after a collection rewriting copies: %+v (%+v); want %d chunks, each once", c, res.collected, unique)
	}
	t.Logf("%d versions through %d receivers in %v: %d chunks stored, %d copies (0 after a collection rewriting %d packs, copying %d bytes); %d of %d referenced bytes crossed; %d conflicts; PUT %d, GET %d",
		res.commits, f.receivers, res.elapsed, res.end.Chunks, res.end.Copies, res.collected.Rewritten, res.collected.BytesCopied,
		res.sent, res.referenced, res.conflicts, res.puts, res.gets)
}

// BenchmarkFleet runs a larger fleet (10 senders × 2 receivers, 3
// versions each: a golden image of 16 MiB, 1 MiB of their own a version,
// a 4 MiB shared update) per round and reports versions committed a
// second, what crossed from the senders as a fraction of what the
// versions name, the pack bytes stored, the chunks stored twice (before
// and after a collection that rewrites the packs holding copies), and
// requests per version (the collection's not counted).
func BenchmarkFleet(b *testing.B) {
	f := fleet{senders: 10, receivers: 2, versions: 3, golden: 256, own: 16, update: 64, size: 64 << 10, collect: true}
	var res fleetResult
	for b.Loop() {
		bd := newBed(b)
		bd.cfg.PackSize = s3store.DefaultPackSize
		res = runFleet(b, bd, f)
	}
	n := float64(res.commits)
	b.ReportMetric(n/res.elapsed.Seconds(), "versions/s")
	b.ReportMetric(float64(res.end.PackBytes)/1e6, "MB-stored")
	b.ReportMetric(float64(res.sent)/float64(res.referenced), "sent/referenced")
	b.ReportMetric(float64(res.end.Copies), "copies")
	b.ReportMetric(float64(res.afterCollect.Copies), "copies-collected")
	b.ReportMetric(float64(res.collected.BytesCopied)/1e6, "MB-rewritten")
	b.ReportMetric(float64(res.puts)/n, "PUT/version")
	b.ReportMetric(float64(res.gets)/n, "GET/version")
}
