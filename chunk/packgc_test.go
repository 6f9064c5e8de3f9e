package chunk_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

const (
	gcChunkSize = 4096
	gcRecLen    = 41 + gcChunkSize // header and raw payload: random data does not compress
	gcPerPack   = 15               // records in a full pack
)

// gcChunk is chunk number i of the compaction tests: random, so stored raw.
func gcChunk(i int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 77))
	b := make([]byte, gcChunkSize)
	for k := 0; k < len(b); k += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[k+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func gcID(i int) chunk.ID { return chunk.Sum(gcChunk(i)) }

// gcStore fills a store in dir: chunks 0..body-1 fill body/gcPerPack packs
// exactly (chunk i in pack i/gcPerPack+1), and chunks body..body+tail-1 are
// in the pack being appended to. Everything is synced.
func gcStore(t testing.TB, dir string, body, tail int) *chunk.PackStore {
	t.Helper()
	s := openGC(t, dir)
	gcPut(t, s, 0, body+tail)
	return s
}

func openGC(t testing.TB, dir string) *chunk.PackStore {
	t.Helper()
	s, err := chunk.OpenPackStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	chunk.SetPackTarget(s, gcPerPack*gcRecLen)
	return s
}

func gcPut(t testing.TB, s *chunk.PackStore, from, to int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < to; i++ {
		if err := s.Put(ctx, gcID(i), gcChunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// packFiles lists the pack files in dir with their sizes.
func packFiles(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "packs"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".dat" {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = fi.Size()
	}
	return m
}

func total(files map[string]int64) (n int64) {
	for _, sz := range files {
		n += sz
	}
	return n
}

// checkChunks reads every chunk in kept back, verified and equal to what
// was put, and finds every chunk in dropped missing.
func checkChunks(t testing.TB, s chunk.Store, kept, dropped []int) {
	t.Helper()
	ctx := context.Background()
	for _, i := range kept {
		got, err := s.Get(ctx, gcID(i))
		if err != nil || !bytes.Equal(got, gcChunk(i)) {
			t.Fatalf("kept chunk %d: %d bytes, %v", i, len(got), err)
		}
	}
	for _, i := range dropped {
		if ok, _ := s.Has(ctx, gcID(i)); ok {
			t.Fatalf("dropped chunk %d is held", i)
		}
		if _, err := s.Get(ctx, gcID(i)); !errors.Is(err, chunk.ErrChunkMissing) {
			t.Fatalf("dropped chunk %d: %v, want ErrChunkMissing", i, err)
		}
	}
}

// split sorts chunks 0..n-1 by keep.
func split(n int, keep func(int) bool) (kept, dropped []int) {
	for i := range n {
		if keep(i) {
			kept = append(kept, i)
		} else {
			dropped = append(dropped, i)
		}
	}
	return kept, dropped
}

// keepSet is a keep function for Compact that refuses the chunks in drop.
func keepSet(drop []int) func(chunk.ID) bool {
	m := map[chunk.ID]bool{}
	for _, i := range drop {
		m[gcID(i)] = true
	}
	return func(id chunk.ID) bool { return !m[id] }
}

func TestCompact(t *testing.T) {
	const body, tail, packs = 8 * gcPerPack, 5, 8
	tests := []struct {
		name      string
		keep      func(i int) bool // for body chunks; the tail is kept
		minDead   float64
		removed   int // packs removed
		rewritten int // of those, rewritten
		copied    int // records copied
	}{
		{"keep everything", func(int) bool { return true }, 0.5, 0, 0, 0},
		{"older half all dead", func(i int) bool { return i >= body/2 }, 0.5, packs / 2, 0, 0},
		{"nothing in old packs", func(int) bool { return false }, 0.5, packs, 0, 0},
		{"two thirds dead", func(i int) bool { return i%3 == 0 }, 0.5, packs, packs, body / 3},
		// The packs stay; their sidecars, rewritten at Close, no longer
		// list the dropped chunks.
		{"two thirds dead, under minDead", func(i int) bool { return i%3 == 0 }, 0.9, 0, 0, 0},
		{"one pack two thirds dead, one all dead", func(i int) bool {
			return i/gcPerPack != 2 && (i/gcPerPack != 5 || i%3 == 0)
		}, 0.5, 2, 1, gcPerPack / 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			s := gcStore(t, dir, body, tail)
			kept, dropped := split(body, tc.keep)
			for i := body; i < body+tail; i++ {
				kept = append(kept, i)
			}
			before := packFiles(t, dir)
			if len(before) != packs+1 {
				t.Fatalf("%d packs before, want %d", len(before), packs+1)
			}

			st, err := s.Compact(ctx, keepSet(dropped), tc.minDead)
			if err != nil {
				t.Fatal(err)
			}
			after := packFiles(t, dir)
			want := chunk.CompactStats{
				ChunksDropped:  len(dropped),
				PacksRemoved:   tc.removed,
				PacksRewritten: tc.rewritten,
				BytesCopied:    int64(tc.copied * gcRecLen),
				BytesFreed:     total(before) - total(after),
			}
			if st != want {
				t.Errorf("stats %+v, want %+v", st, want)
			}
			var removed []string
			for n := range before {
				if _, ok := after[n]; !ok {
					removed = append(removed, n)
				}
			}
			if len(removed) != tc.removed {
				t.Errorf("packs %v removed, want %d", removed, tc.removed)
			}
			// Packs the copies started are named after every earlier one.
			last := slices.Max(slices.Collect(maps.Keys(before)))
			for n := range after {
				if _, ok := before[n]; !ok && n <= last {
					t.Errorf("new pack %s sorts before %s", n, last)
				}
			}
			if tc.copied > 0 && st.BytesFreed <= 0 {
				t.Errorf("rewriting freed %d bytes", st.BytesFreed)
			}
			checkChunks(t, s, kept, dropped)
			s = reopenAndCheck(t, s, dir, kept, dropped)
			// Compacting again with the same keep finds nothing more to do
			// where everything dropped is gone.
			st, err = s.Compact(ctx, keepSet(dropped), tc.minDead)
			if err != nil {
				t.Fatal(err)
			}
			if st != (chunk.CompactStats{}) {
				t.Errorf("second Compact: %+v, want nothing done", st)
			}
			checkChunks(t, s, kept, dropped)
		})
	}
}

// TestCompactPackNames checks that packs made after a Compact are named
// after every pack there ever was, in the order they were made, across a
// reopen.
func TestCompactPackNames(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := gcStore(t, dir, 4*gcPerPack, 1)
	// Keep only pack 3: packs 1, 2 and 4 go, 3 and 5 (the current one) stay.
	kept, dropped := split(4*gcPerPack, func(i int) bool { return i/gcPerPack == 2 })
	if _, err := s.Compact(ctx, keepSet(dropped), 0.5); err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(packFiles(t, dir)))
	if want := []string{"pack-000003.dat", "pack-000005.dat"}; !slices.Equal(names, want) {
		t.Fatalf("packs after Compact: %v, want %v", names, want)
	}
	s.Close()
	s = openGC(t, dir)
	// Enough to fill pack 5 and start another.
	gcPut(t, s, 1000, 1000+gcPerPack)
	if _, ok := packFiles(t, dir)["pack-000006.dat"]; !ok {
		t.Fatalf("new pack not numbered after the last: %v", packFiles(t, dir))
	}
	s.Close()
	s = openGC(t, dir)
	more := []int{4 * gcPerPack}
	for i := 1000; i < 1000+gcPerPack; i++ {
		more = append(more, i)
	}
	checkChunks(t, s, append(kept, more...), dropped)
}

// TestCompactCrashWindow puts back on disk the packs a Compact removed, as
// a crash after the copies were made durable but before the removals
// reached the disk leaves them, and, in the torn case, cuts the copies
// short, as a crash during the copying leaves them (the packs were still
// there then). Every live chunk reads back either way, and the next
// Compact leaves the store as the first one did.
func TestCompactCrashWindow(t *testing.T) {
	for _, torn := range []bool{false, true} {
		t.Run(fmt.Sprintf("torn=%v", torn), func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			const body = 4 * gcPerPack
			s := gcStore(t, dir, body, 2)
			kept, dropped := split(body, func(i int) bool { return i%3 == 0 })
			kept = append(kept, body, body+1)
			before := packFiles(t, dir)
			saved := map[string][]byte{}
			for n := range before {
				b, err := os.ReadFile(filepath.Join(dir, "packs", n))
				if err != nil {
					t.Fatal(err)
				}
				saved[n] = b
			}
			st, err := s.Compact(ctx, keepSet(dropped), 0.5)
			if err != nil {
				t.Fatal(err)
			}
			if st.PacksRewritten != 4 {
				t.Fatalf("%+v: want 4 packs rewritten", st)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			compacted := packFiles(t, dir)

			for n, b := range saved {
				if _, ok := compacted[n]; !ok {
					if err := os.WriteFile(filepath.Join(dir, "packs", n), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			if torn {
				// The current pack held the tail; cut it in the middle of
				// the second copy.
				cur := "pack-000005.dat"
				if err := os.Truncate(filepath.Join(dir, "packs", cur), before[cur]+gcRecLen+100); err != nil {
					t.Fatal(err)
				}
			}
			s = openGC(t, dir)
			// Until the next Compact, the dropped chunks are back too.
			checkChunks(t, s, append(kept, dropped...), nil)

			st, err = s.Compact(ctx, keepSet(dropped), 0.5)
			if err != nil {
				t.Fatal(err)
			}
			checkChunks(t, s, kept, dropped)
			s = reopenAndCheck(t, s, dir, kept, dropped)
			after := packFiles(t, dir)
			if !torn {
				// The restored packs are all dead: their live records are
				// the copies'. Removing them leaves what the first
				// Compact left.
				if st.PacksRewritten != 0 || st.PacksRemoved != 4 || fmt.Sprint(after) != fmt.Sprint(compacted) {
					t.Errorf("%+v: packs %v, want %v", st, after, compacted)
				}
			} else {
				// The chunks whose copies were cut off are read from the
				// restored packs, which are rewritten or removed again.
				for n := range saved {
					if _, ok := after[n]; ok && n != "pack-000005.dat" {
						t.Errorf("restored %s is still there", n)
					}
				}
				if st.PacksRemoved != 4 || st.PacksRewritten == 0 || total(after) >= total(before) {
					t.Errorf("%+v: packs %v (%d bytes) after, %d bytes before", st, after, total(after), total(before))
				}
			}
		})
	}
}

// TestCompactBesideReaders reads, through a reader opened before a Compact,
// every chunk it saw, including those Compact dropped and those in packs it
// removed; and opens a reader while the writer removes a pack it listed,
// with the copies of its records in a pack made after the listing.
func TestCompactBesideReaders(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	const body = 4 * gcPerPack
	// The current pack (5) is nearly full, so that the copies go to a new
	// one (6).
	s := gcStore(t, dir, body, gcPerPack-1)
	all, _ := split(body+gcPerPack-1, func(int) bool { return true })
	kept, dropped := split(body+gcPerPack-1, func(i int) bool { return i >= body || i%3 == 0 })

	early, err := chunk.OpenPackStoreReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()

	var opened []string
	compacted := false
	r, err := chunk.OpenPackStoreReadOnlyWith(dir, func(name string) (*os.File, error) {
		opened = append(opened, filepath.Base(name))
		if filepath.Base(name) == "pack-000002.dat" && !compacted {
			compacted = true
			if _, err := s.Compact(ctx, keepSet(dropped), 0.5); err != nil {
				t.Error(err)
			}
		}
		return os.Open(name)
	})
	if err != nil {
		t.Fatalf("open for reading while packs are removed: %v", err)
	}
	defer r.Close()
	if !compacted {
		t.Fatal("the hook never ran")
	}
	// Pack 1 was opened before the Compact removed it; 2, 3 and 4 were
	// listed but gone; 5 and those holding the copies, from 6 on, came
	// from the second listing.
	want := append([]string{"pack-000001.dat", "pack-000002.dat"}, slices.Sorted(maps.Keys(packFiles(t, dir)))...)
	if !slices.Equal(opened, want) || !slices.Contains(opened, "pack-000006.dat") {
		t.Errorf("reader opened %v, want %v", opened, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "packs", "pack-000001.dat")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pack 1 still there: %v", err)
	}
	checkChunks(t, r, kept, nil)
	// Everything the early reader saw, though the packs are gone.
	checkChunks(t, early, all, nil)
	checkChunks(t, s, kept, dropped)
}

// errAfter is a context whose Err reports it cancelled after n calls.
type errAfter struct {
	context.Context
	n atomic.Int64
}

func (c *errAfter) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestCompactCancelled cancels a Compact at each point it checks its
// context, and finds the store valid at each, before and after a reopen.
func TestCompactCancelled(t *testing.T) {
	const body = 4 * gcPerPack
	kept, dropped := split(body, func(i int) bool { return i%3 == 0 || i/gcPerPack == 1 })
	for n := int64(0); ; n++ {
		dir := t.TempDir()
		s := gcStore(t, dir, body, 1)
		ctx := &errAfter{Context: t.Context()}
		ctx.n.Store(n)
		st, err := s.Compact(ctx, keepSet(dropped), 0.5)
		if err == nil {
			if n < 2 {
				t.Fatalf("Compact checked its context %d times", n)
			}
			break
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled after %d checks: %v", n, err)
		}
		if n > 0 && st.ChunksDropped != len(dropped) {
			t.Errorf("cancelled after %d checks: %+v", n, st)
		}
		checkChunks(t, s, kept, nil)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openGC(t, dir)
		checkChunks(t, s, kept, nil)
		if _, err := s.Compact(t.Context(), keepSet(dropped), 0.5); err != nil {
			t.Fatal(err)
		}
		checkChunks(t, s, kept, dropped)
	}
}

// TestCompactConcurrent compacts, round after round, while other
// goroutines put, get, check and sync chunks.
func TestCompactConcurrent(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	const body, rounds = 6 * gcPerPack, 3
	s := gcStore(t, dir, body, 0)
	// Round r drops the body chunks with i%4 == r (and those of the rounds
	// before); the rest of the body, and every chunk put meanwhile, is
	// kept.
	var dropped []int
	keep := func(r int) func(chunk.ID) bool {
		for i := range body {
			if i%4 == r {
				dropped = append(dropped, i)
			}
		}
		return keepSet(dropped)
	}
	stable, _ := split(body, func(i int) bool { return i%4 == 3 })

	var put atomic.Int64 // chunks 10000.. put and read back so far
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	wg.Go(func() {
		for i := 10000; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if err := s.Put(ctx, gcID(i), gcChunk(i)); err != nil {
				errs <- err
				return
			}
			if got, err := s.Get(ctx, gcID(i)); err != nil || !bytes.Equal(got, gcChunk(i)) {
				errs <- fmt.Errorf("chunk %d just put: %v", i, err)
				return
			}
			put.Add(1)
		}
	})
	for g := range 2 {
		wg.Go(func() {
			for k := g; ; k++ {
				select {
				case <-done:
					return
				default:
				}
				i := stable[k%len(stable)]
				if got, err := s.Get(ctx, gcID(i)); err != nil || !bytes.Equal(got, gcChunk(i)) {
					errs <- fmt.Errorf("kept chunk %d: %v", i, err)
					return
				}
				if ok, err := s.Has(ctx, gcID(i)); !ok || err != nil {
					errs <- fmt.Errorf("Has kept chunk %d: %v, %v", i, ok, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := s.Sync(ctx); err != nil {
				errs <- err
				return
			}
		}
	})
	var rewritten int
	for r := range rounds {
		st, err := s.Compact(ctx, keep(r), 0.2)
		if err != nil {
			t.Fatal(err)
		}
		rewritten += st.PacksRewritten
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if rewritten == 0 {
		t.Error("no pack was rewritten")
	}
	kept := stable
	for i := 10000; i < 10000+int(put.Load()); i++ {
		kept = append(kept, i)
	}
	checkChunks(t, s, kept, dropped)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openGC(t, dir)
	checkChunks(t, s, kept, nil)
}

// BenchmarkCompact rewrites packs of 4 KiB and 64 KiB chunks of which half
// are dropped; the bytes are those copied.
func BenchmarkCompact(b *testing.B) {
	const storeSize, packSize = 64 << 20, 8 << 20
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("chunk=%dKiB", size>>10), func(b *testing.B) {
			ctx := b.Context()
			r := rand.New(rand.NewPCG(uint64(size), 1))
			data := make([][]byte, storeSize/size)
			for i := range data {
				data[i] = make([]byte, size)
				for k := 0; k < size; k += 8 {
					v := r.Uint64()
					for j := range 8 {
						data[i][k+j] = byte(v >> (8 * j))
					}
				}
			}
			drop := map[chunk.ID]bool{}
			for i := 0; i < len(data); i += 2 {
				drop[chunk.Sum(data[i])] = true
			}
			keep := func(id chunk.ID) bool { return !drop[id] }
			var copied int64
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				dir := b.TempDir()
				s, err := chunk.OpenPackStore(dir)
				if err != nil {
					b.Fatal(err)
				}
				chunk.SetPackTarget(s, packSize)
				for _, d := range data {
					if err := s.PutVerified(ctx, chunk.Sum(d), d, nil, true); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Sync(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				st, err := s.Compact(ctx, keep, 0.5)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				copied = st.BytesCopied
				s.Close()
				os.RemoveAll(dir)
				b.StartTimer()
			}
			b.SetBytes(copied)
		})
	}
}

// TestCompactSealsTheCurrentPack: a pack being appended to that is mostly
// dead and big enough is sealed and rewritten in the same Compact, so a
// store that drops as much as it adds gets space back before the pack
// reaches its target size.
func TestCompactSealsTheCurrentPack(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name    string
		sealMin int64
		keep    int // of 20 chunks
		sealed  bool
	}{
		{"mostly dead", 10 * gcRecLen, 5, true},
		{"mostly live", 10 * gcRecLen, 15, false},
		{"too small to seal", 40 * gcRecLen, 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openGC(t, dir)
			chunk.SetPackTarget(s, 1<<30)
			chunk.SetSealMin(s, tc.sealMin)
			gcPut(t, s, 0, 20)
			before := packFiles(t, dir)
			if len(before) != 1 {
				t.Fatalf("packs before: %v", before)
			}
			st, err := s.Compact(ctx, func(id chunk.ID) bool {
				for i := range tc.keep {
					if id == gcID(i) {
						return true
					}
				}
				return false
			}, 0.5)
			if err != nil {
				t.Fatal(err)
			}
			after := packFiles(t, dir)
			if tc.sealed {
				if st.PacksRewritten != 1 || total(after) != int64(tc.keep*gcRecLen) {
					t.Fatalf("stats %+v; packs %v: want the pack rewritten to its %d live records", st, after, tc.keep)
				}
			} else if st.PacksRemoved != 0 || total(after) != 20*gcRecLen {
				t.Fatalf("stats %+v; packs %v: want nothing rewritten", st, after)
			}
			for i := range 20 {
				got, err := s.Get(ctx, gcID(i))
				if i < tc.keep && (err != nil || !bytes.Equal(got, gcChunk(i))) {
					t.Fatalf("kept chunk %d: %v", i, err)
				}
				if i >= tc.keep && err == nil {
					t.Fatalf("dropped chunk %d still readable", i)
				}
			}
			gcPut(t, s, 100, 103) // appends go on
			if _, err := s.Get(ctx, gcID(101)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCompactLeavesDamagedPacks: a pack whose records stop before its end
// when the store is opened (here its first header is damaged, hiding the
// intact records after it) is never removed nor rewritten: damage must not
// turn into loss.
func TestCompactLeavesDamagedPacks(t *testing.T) {
	dir := t.TempDir()
	s := gcStore(t, dir, 2*gcPerPack, 3)
	s.Close()
	p1 := filepath.Join(dir, "packs", "pack-000001.dat")
	f, err := os.OpenFile(p1, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'X'}, 1); err != nil { // the magic of its first record
		t.Fatal(err)
	}
	f.Close()
	before := packFiles(t, dir)
	s = openGC(t, dir)
	st, err := s.Compact(t.Context(), func(chunk.ID) bool { return true }, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksRemoved != 0 || packFiles(t, dir)["pack-000001.dat"] != before["pack-000001.dat"] {
		t.Fatalf("Compact touched the damaged pack: %+v; packs %v", st, packFiles(t, dir))
	}
}

// TestTornCopyNeverHidesItsOriginal: a copy of a chunk in a later pack
// (what Compact writes) whose payload did not reach the disk does not
// replace the intact original when the store is opened.
func TestTornCopyNeverHidesItsOriginal(t *testing.T) {
	dir := t.TempDir()
	s := gcStore(t, dir, gcPerPack, 2)
	s.Close()
	rec := make([]byte, 0, gcRecLen)
	id := gcID(0)
	rec = append(append(rec, "NTCK"...), id[:]...)
	rec = binary.BigEndian.AppendUint32(append(rec, 0), gcChunkSize)
	rec = append(rec, make([]byte, gcChunkSize)...) // the payload never written: zeros
	f, err := os.OpenFile(filepath.Join(dir, "packs", "pack-000002.dat"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s = openGC(t, dir)
	got, err := s.Get(t.Context(), id)
	if err != nil || !bytes.Equal(got, gcChunk(0)) {
		t.Fatalf("chunk 0 after a torn copy: %v", err)
	}
}

// reopenAndCheck closes s, opens the store in dir again and checks that it
// holds exactly the kept chunks.
func reopenAndCheck(t *testing.T, s *chunk.PackStore, dir string, kept, dropped []int) *chunk.PackStore {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openGC(t, dir)
	checkChunks(t, s, kept, dropped)
	if s.Len() != len(kept) {
		t.Errorf("reopened store holds %d chunks, want %d", s.Len(), len(kept))
	}
	return s
}
