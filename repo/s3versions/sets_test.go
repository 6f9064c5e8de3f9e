package s3versions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/s3test"
)

// bed is one bucket prefix on a real S3 server; each receiver opens its
// own store (its own client and map) on it.
type bed struct {
	srv *s3test.Server
	cfg s3store.Config
}

func newBed(t testing.TB) *bed {
	srv := s3test.Start(t)
	return &bed{srv: srv, cfg: s3store.Config{
		URL: "s3://" + srv.NewBucket(t) + "/repo", Endpoint: srv.Endpoint, PathStyle: true,
		Region: srv.Region, Credentials: srv.Credentials(), PackSize: 64 << 10,
	}}
}

// receiver opens a store on the bed and the sets in it.
func (b *bed) receiver(t testing.TB) *Sets {
	t.Helper()
	st, err := s3store.Open(t.Context(), b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(st)
}

// content returns n chunks made from seed, 16 KiB each.
func content(seed uint64, n int) [][]byte { return chunksOf(seed, n, 16<<10) }

// chunksOf returns n chunks of size bytes made from seed, half random: they
// compress about 2:1.
func chunksOf(seed uint64, n, size int) [][]byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		r.Read(out[i][:size/2])
	}
	return out
}

// store puts chunks into a receiver's store.
func store(t testing.TB, s *Sets, chunks [][]byte) {
	t.Helper()
	for _, c := range chunks {
		if err := s.Store().Put(t.Context(), chunk.Sum(c), c); err != nil {
			t.Fatal(err)
		}
	}
}

// version returns a version of set whose one image is chunks, named by
// what it says.
func version(t testing.TB, set string, parent chunk.ID, what string, chunks [][]byte) Version {
	t.Helper()
	x := &chunk.Index{Params: chunk.DefaultCDC()}
	for _, c := range chunks {
		x.Entries = append(x.Entries, chunk.Entry{Offset: x.Size, Length: int64(len(c)), ID: chunk.Sum(c)})
		x.Size += int64(len(c))
	}
	data, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	record := fmt.Appendf(nil, `{"set":%q,"parent":%q,"what":%q}`, set, parent, what)
	return Version{Digest: chunk.ID(blake3.Sum256(record)), Parent: parent, Record: record,
		Indexes: []Index{{Name: "disk", Data: data}}, Meta: []byte("meta " + what)}
}

func head(t testing.TB, s *Sets, set string) *Head {
	t.Helper()
	h, err := s.Head(t.Context(), set)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// checkVersion reads a version back through r and compares it with v,
// chunks included.
func checkVersion(t testing.TB, r *Sets, set string, e Entry, v Version, chunks [][]byte) {
	t.Helper()
	ctx := t.Context()
	rec, err := r.Record(ctx, set, e)
	if err != nil || !bytes.Equal(rec, v.Record) {
		t.Fatalf("record of %d: %q, %v", e.Seq, rec, err)
	}
	meta, err := r.Meta(ctx, set, e)
	if err != nil || !bytes.Equal(meta, v.Meta) {
		t.Fatalf("meta of %d: %q, %v", e.Seq, meta, err)
	}
	x, err := r.Index(ctx, set, e, "disk")
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Entries) != len(chunks) {
		t.Fatalf("index of %d: %d entries, want %d", e.Seq, len(x.Entries), len(chunks))
	}
	for i, en := range x.Entries {
		got, err := r.Store().Get(ctx, en.ID)
		if err != nil || !bytes.Equal(got, chunks[i]) {
			t.Fatalf("version %d chunk %d: %v", e.Seq, i, err)
		}
	}
}

func TestCommitAndRead(t *testing.T) {
	b := newBed(t)
	w := b.receiver(t)
	ctx := t.Context()
	c1 := content(1, 5)
	store(t, w, c1)
	v1 := version(t, "vm1", chunk.ID{}, "one", c1)
	h, err := w.Commit(ctx, head(t, w, "vm1"), v1, CommitOptions{MakeCurrent: true})
	if err != nil {
		t.Fatal(err)
	}
	c2 := append(content(2, 2), c1[2:]...)
	store(t, w, c2)
	v2 := version(t, "vm1", v1.Digest, "two", c2)
	if _, err := w.Commit(ctx, h, v2, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, head(t, w, "vm1"), v1, CommitOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("commit of a version the set holds: %v, want ErrExists", err)
	}

	r := b.receiver(t) // another receiver
	got := head(t, r, "vm1")
	if len(got.Versions) != 2 || got.Current != 1 || got.Next != 3 {
		t.Fatalf("head: %d versions, current %d, next %d; want 2, 1, 3", len(got.Versions), got.Current, got.Next)
	}
	e1, ok1 := got.ByDigest(v1.Digest)
	e2, ok2 := got.ByDigest(v2.Digest)
	if !ok1 || !ok2 || e1.Seq != 1 || e2.Seq != 2 || e2.Parent != v1.Digest {
		t.Fatalf("entries: %+v %v, %+v %v", e1, ok1, e2, ok2)
	}
	checkVersion(t, r, "vm1", e1, v1, c1)
	checkVersion(t, r, "vm1", e2, v2, c2)
	if names, err := r.Names(ctx); err != nil || len(names) != 1 || names[0] != "vm1" {
		t.Fatalf("sets: %v, %v", names, err)
	}
}

// TestCommitMissingChunks: a version whose chunks are not stored is not
// committed; storing them makes the same commit work.
func TestCommitMissingChunks(t *testing.T) {
	b := newBed(t)
	w := b.receiver(t)
	c := content(3, 4)
	store(t, w, c[:2])
	v := version(t, "vm", chunk.ID{}, "v", c)
	_, err := w.Commit(t.Context(), head(t, w, "vm"), v, CommitOptions{})
	var me *s3store.MissingError
	if !errors.As(err, &me) || len(me.IDs) != 2 || !errors.Is(err, chunk.ErrChunkMissing) {
		t.Fatalf("commit without 2 of its chunks: %v, want a MissingError of 2", err)
	}
	if h := head(t, b.receiver(t), "vm"); len(h.Versions) != 0 {
		t.Fatalf("a refused commit left %d versions", len(h.Versions))
	}
	store(t, w, c[2:])
	if _, err := w.Commit(t.Context(), head(t, w, "vm"), v, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCommitRace: receivers (each its own store and client) commit to one
// set from the same head at once: one wins, the others get ErrConflict
// and nothing of theirs is visible; each then reads the head again and
// commits again until it lands. Every version is committed once, with
// its own number. Both a set that does not exist yet and one that does.
func TestCommitRace(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprintf("existing=%v", existing), func(t *testing.T) {
			b := newBed(t)
			const receivers = 4
			rs := make([]*Sets, receivers)
			for i := range rs {
				rs[i] = b.receiver(t)
			}
			shared := content(10, 3)
			store(t, rs[0], shared)
			if existing {
				if _, err := rs[0].Commit(t.Context(), head(t, rs[0], "vm"), version(t, "vm", chunk.ID{}, "base", shared), CommitOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			base := head(t, rs[0], "vm")
			vs := make([]Version, receivers)
			chunks := make([][][]byte, receivers)
			for i, r := range rs {
				chunks[i] = append(content(uint64(20+i), 2), shared...)
				store(t, r, chunks[i])
				vs[i] = version(t, "vm", chunk.ID{}, fmt.Sprintf("by %d", i), chunks[i])
			}
			firstErr := make([]error, receivers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, r := range rs {
				wg.Go(func() {
					<-start
					h := base
					for attempt := 0; ; attempt++ {
						_, err := r.Commit(t.Context(), h, vs[i], CommitOptions{MakeCurrent: true})
						if attempt == 0 {
							firstErr[i] = err
						}
						if err == nil {
							return
						}
						if !errors.Is(err, s3store.ErrConflict) || attempt > 50 {
							t.Errorf("receiver %d: %v", i, err)
							return
						}
						h = head(t, r, "vm")
					}
				})
			}
			close(start)
			wg.Wait()
			wins := 0
			for i, err := range firstErr {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, s3store.ErrConflict):
					t.Fatalf("receiver %d's first attempt: %v", i, err)
				}
			}
			// From an existing head exactly one swap wins. A set that does
			// not exist is first created empty by every racer, and one
			// that lost that may swap first after it.
			if wins > 1 || existing && wins != 1 {
				t.Fatalf("%d first attempts won, want 1 (at most 1 for a new set)", wins)
			}
			r := b.receiver(t)
			h := head(t, r, "vm")
			want := receivers
			if existing {
				want++
			}
			if len(h.Versions) != want || h.Next != uint64(want+1) {
				t.Fatalf("%d versions, next %d; want %d, %d", len(h.Versions), h.Next, want, want+1)
			}
			for i, v := range vs {
				e, ok := h.ByDigest(v.Digest)
				if !ok {
					t.Fatalf("version of receiver %d lost", i)
				}
				checkVersion(t, r, "vm", e, v, chunks[i])
			}
		})
	}
}

// TestConcurrentSetCurrent: SetCurrent and Remove are swaps of the head
// too: from a stale head they are refused.
func TestStaleHead(t *testing.T) {
	b := newBed(t)
	w := b.receiver(t)
	c := content(4, 2)
	store(t, w, c)
	h1, err := w.Commit(t.Context(), head(t, w, "vm"), version(t, "vm", chunk.ID{}, "1", c), CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.SetCurrent(t.Context(), h1, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Remove(t.Context(), h1, 1); !errors.Is(err, s3store.ErrConflict) {
		t.Fatalf("remove from a stale head: %v, want ErrConflict", err)
	}
	if _, err := w.SetCurrent(t.Context(), h1, 1); !errors.Is(err, s3store.ErrConflict) {
		t.Fatalf("set current from a stale head: %v, want ErrConflict", err)
	}
	h := head(t, w, "vm")
	if h.Current != 1 || len(h.Versions) != 1 {
		t.Fatalf("head: current %d, %d versions", h.Current, len(h.Versions))
	}
}

// tick waits until the server's clock (whole seconds) has passed every
// object written so far.
func tick(t testing.TB, s *Sets) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	first, err := s.Store().Clock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for {
		now, err := s.Store().Clock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if now.After(first) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the server's clock did not move")
		case <-tk.C:
		}
	}
}
