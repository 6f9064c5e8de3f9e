package s3store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/storetest"
	"github.com/ntc-project/ntc/internal/s3test"
)

// testBed is a versitygw with one bucket; every store gets its own prefix
// unless it asks for another's.
type testBed struct {
	srv    *s3test.Server
	bucket string
	n      atomic.Int64
}

func newTestBed(t testing.TB) *testBed {
	srv := s3test.Start(t)
	return &testBed{srv: srv, bucket: srv.NewBucket(t)}
}

// config returns the Config of a store at a new prefix.
func (tb *testBed) config() Config {
	return Config{
		URL:         fmt.Sprintf("s3://%s/store-%d", tb.bucket, tb.n.Add(1)),
		Endpoint:    tb.srv.Endpoint,
		PathStyle:   true,
		Region:      tb.srv.Region,
		Credentials: tb.srv.Credentials(),
	}
}

func (tb *testBed) open(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// corrupt damages the byte at off of key in a store.
func (tb *testBed) corrupt(t testing.TB, s *Store, key string, off int64) {
	tb.srv.Corrupt(t, tb.bucket, s.b.key(key), off)
}

// locate returns the pack object and offset of a stored chunk.
func locate(t testing.TB, s *Store, id chunk.ID) (packName, loc) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.where[id]
	if !ok {
		t.Fatalf("chunk %s not stored", id.Short())
	}
	return s.names[l.pack], l
}

func TestStore(t *testing.T) {
	tb := newTestBed(t)
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) chunk.Store { return tb.open(t, tb.config()) },
		Corrupt: func(t *testing.T, cs chunk.Store, id chunk.ID) {
			s := cs.(*Store)
			if err := s.Sync(t.Context()); err != nil {
				t.Fatal(err)
			}
			name, l := locate(t, s, id)
			tb.corrupt(t, s, packKey(name), l.off+int64(l.length)-1)
		},
	})
}

// randomChunks returns n chunks of size bytes, half of each random (so
// they compress somewhat).
func randomChunks(seed uint64, n, size int) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, size)
		for j := 0; j < size/2; j++ {
			b[j] = byte(r.Uint32())
		}
		out[i] = b
	}
	return out
}

// stored opens a store at cfg, stores n chunks of size bytes made from
// seed in it, and syncs it.
func (tb *testBed) stored(t testing.TB, cfg Config, seed uint64, n, size int) (*Store, [][]byte) {
	t.Helper()
	s := tb.open(t, cfg)
	chunks := randomChunks(seed, n, size)
	putAll(t, s, chunks)
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, chunks
}

func putAll(t testing.TB, s *Store, chunks [][]byte) {
	t.Helper()
	for _, c := range chunks {
		if err := s.Put(t.Context(), chunk.Sum(c), c); err != nil {
			t.Fatal(err)
		}
	}
}

func checkAll(t testing.TB, s *Store, chunks [][]byte, want bool) {
	t.Helper()
	for i, c := range chunks {
		got, err := s.Get(t.Context(), chunk.Sum(c))
		switch {
		case want && (err != nil || !bytes.Equal(got, c)):
			t.Fatalf("chunk %d: %d bytes, %v", i, len(got), err)
		case !want && !errors.Is(err, chunk.ErrChunkMissing):
			t.Fatalf("chunk %d: %v, want ErrChunkMissing", i, err)
		}
	}
}

// TestPacks: chunks go into packs of about PackSize, each one PUT plus
// one for its listing, and a store opened later finds every chunk.
func TestPacks(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	cfg.PackSize = 256 << 10
	var cnt s3test.Counter
	cfg.Transport = &cnt
	w := tb.open(t, cfg)
	chunks := randomChunks(1, 40, 32<<10) // 40 × ~16 KiB compressed: about 3 packs
	putAll(t, w, chunks)
	if err := w.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	packs := w.Packs()
	if packs < 2 || packs > 4 {
		t.Fatalf("%d packs for 40 chunks of ~16 KiB in packs of 256 KiB", packs)
	}
	if got := cnt.Count(http.MethodPut); got != 2*packs {
		t.Fatalf("%d PUTs for %d packs, want 2 each", got, packs)
	}
	checkAll(t, w, chunks, true)

	cfg.Transport = nil
	r := tb.open(t, cfg)
	if r.Len() != len(chunks) || r.Packs() != packs {
		t.Fatalf("reopened: %d chunks in %d packs, want %d in %d", r.Len(), r.Packs(), len(chunks), packs)
	}
	checkAll(t, r, chunks, true)
}

// TestConditionalWrites checks that the server refuses a second create
// and a replace from a stale ETag: what sharing a bucket rests on.
func TestConditionalWrites(t *testing.T) {
	tb := newTestBed(t)
	s := tb.open(t, tb.config())
	ctx := t.Context()
	first, err := s.b.create(ctx, "refs/x", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.create(ctx, "refs/x", []byte("two")); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create = %v, want ErrConflict", err)
	}
	if got, _, err := s.b.get(ctx, "refs/x", 100); err != nil || string(got) != "one" {
		t.Fatalf("after a refused create: %q, %v", got, err)
	}
	second, err := s.b.swap(ctx, "refs/x", first, []byte("two"))
	if err != nil {
		t.Fatalf("swap from the current ETag: %v", err)
	}
	if second == first {
		t.Fatalf("ETag unchanged by a replace: %s", first)
	}
	if _, err := s.b.swap(ctx, "refs/x", first, []byte("three")); !errors.Is(err, ErrConflict) {
		t.Fatalf("swap from a stale ETag = %v, want ErrConflict", err)
	}
	if got, _, err := s.b.get(ctx, "refs/x", 100); err != nil || string(got) != "two" {
		t.Fatalf("after a refused swap: %q, %v", got, err)
	}
}

// TestRaceCreate: writers creating the same ref at once: one wins, every
// other gets ErrConflict, and the ref holds the winner's content.
func TestRaceCreate(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	const writers = 8
	stores := make([]*Store, writers)
	for i := range stores {
		stores[i] = tb.open(t, cfg)
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i, s := range stores {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Refs().Create(t.Context(), "sets/vm1/head", []byte(fmt.Sprintf("writer %d", i)))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both created the ref", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrConflict):
			t.Fatalf("writer %d: %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer created the ref")
	}
	got, err := stores[0].Refs().Read(t.Context(), "sets/vm1/head")
	if err != nil || string(got.Data) != fmt.Sprintf("writer %d", winner) {
		t.Fatalf("ref = %q, %v; want writer %d's", got.Data, err, winner)
	}
}

// TestRaceSwap: writers replacing a ref from the same ETag at once: one
// wins, the others get ErrConflict.
func TestRaceSwap(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	s := tb.open(t, cfg)
	base, err := s.Refs().Create(t.Context(), "head", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		w := tb.open(t, cfg)
		wg.Go(func() {
			<-start
			_, err := w.Refs().Swap(t.Context(), "head", base, []byte(fmt.Sprintf("v2 by %d", i)))
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrConflict):
				conflicts.Add(1)
			default:
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != writers-1 {
		t.Fatalf("%d wins, %d conflicts; want 1 and %d", wins.Load(), conflicts.Load(), writers-1)
	}
}

// TestRefUpdate: two writers (separate clients, as two receivers would
// be) each add to a counter by read-modify-write: no update is lost.
func TestRefUpdate(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	const rounds = 12
	var wg sync.WaitGroup
	for w := range 2 {
		s := tb.open(t, cfg)
		wg.Go(func() {
			for i := range rounds {
				_, err := s.Refs().Update(t.Context(), "counter", func(cur []byte, exists bool) ([]byte, error) {
					n := 0
					if exists {
						if _, err := fmt.Sscanf(string(cur), "%d", &n); err != nil {
							return nil, err
						}
					}
					// Unique to this writer and round, as Update asks.
					return []byte(fmt.Sprintf("%d by %d/%d", n+1, w, i)), nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := tb.open(t, cfg).Refs().Read(t.Context(), "counter")
	var n int
	if err == nil {
		_, err = fmt.Sscanf(string(got.Data), "%d", &n)
	}
	if err != nil || n != 2*rounds {
		t.Fatalf("counter = %q (%d), %v; want %d", got.Data, n, err, 2*rounds)
	}
}

func TestRefNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"head", true}, {"sets/vm-1/head.v2", true}, {"A_b", true}, {"_x+y", true}, {"-a", true},
		{"", false}, {"../x", false}, {"a/../b", false}, {"/a", false}, {"a/", false},
		{"a//b", false}, {".hidden", false}, {"a b", false}, {"a\\b", false}, {string(make([]byte, 257)), false},
	} {
		if err := checkRefName(tc.name); (err == nil) != tc.ok {
			t.Errorf("checkRefName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestTwoWritersSameBytes: two writers, both open before either stores,
// store the same chunks in the same order, so their packs have the same
// bytes: both succeed; the one that comes second does not adopt the
// other's pack but salts its own. A salt record holds no chunk, also when
// a damaged listing makes a reader scan the pack.
func TestTwoWritersSameBytes(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	chunks := randomChunks(2, 10, 8<<10)
	a, b := tb.open(t, cfg), tb.open(t, cfg)
	for _, s := range []*Store{a, b} {
		putAll(t, s, chunks)
		if err := s.Sync(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if a.names[0] == b.names[0] {
		t.Fatalf("the second writer adopted the first one's pack %s", a.names[0])
	}
	r := tb.open(t, cfg)
	if r.Packs() != 2 || r.Len() != len(chunks) {
		t.Fatalf("%d packs holding %d chunks, want 2 (one salted) holding %d", r.Packs(), r.Len(), len(chunks))
	}
	checkAll(t, r, chunks, true)
	for _, n := range r.names {
		tb.corrupt(t, r, listingKey(n), 60)
	}
	r2 := tb.open(t, cfg)
	if r2.Packs() != 2 || r2.Len() != len(chunks) {
		t.Fatalf("from the packs themselves: %d packs holding %d chunks, want 2 holding %d", r2.Packs(), r2.Len(), len(chunks))
	}
	checkAll(t, r2, chunks, true)
}

// TestSharedBucket: what one writer stores, another sees after Refresh;
// and a chunk it already sees is not stored again.
func TestSharedBucket(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	a, b := tb.open(t, cfg), tb.open(t, cfg)
	chunks := randomChunks(3, 6, 4<<10)
	putAll(t, a, chunks)
	if err := a.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkAll(t, b, chunks, false)
	if err := b.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkAll(t, b, chunks, true)
	putAll(t, b, chunks)
	if err := b.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b.Packs() != 1 {
		t.Fatalf("%d packs: chunks already stored were stored again", b.Packs())
	}
}

// TestDamagedListing: a listing damaged in the bucket is rebuilt from its
// pack; nothing is lost.
func TestDamagedListing(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	w, chunks := tb.stored(t, cfg, 4, 5, 4<<10)
	name, _ := locate(t, w, chunk.Sum(chunks[0]))
	tb.corrupt(t, w, listingKey(name), 60)
	var cnt s3test.Counter
	cfg.Transport = &cnt
	checkAll(t, tb.open(t, cfg), chunks, true)
	// The collection state, the LIST, the listing, the pack (for the
	// listing), the chunks.
	if got, want := cnt.Count(http.MethodGet), 4+len(chunks); got != want {
		t.Fatalf("%d GETs, want %d: the listing was not rebuilt from its pack", got, want)
	}
}

// TestDamagedPackAndListing: when the pack cannot stand in for a damaged
// listing either, opening says so instead of opening without its chunks.
func TestDamagedPackAndListing(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	w, chunks := tb.stored(t, cfg, 5, 5, 4<<10)
	name, l := locate(t, w, chunk.Sum(chunks[0]))
	tb.corrupt(t, w, listingKey(name), 60)
	tb.corrupt(t, w, packKey(name), l.off)
	_, err := Open(t.Context(), cfg)
	if err == nil || !errors.Is(err, errBadListing) {
		t.Fatalf("Open with a damaged listing and pack = %v, want a damaged-listing error", err)
	}
}

// TestCache: a chunk read once is served from the cache after, without a
// GET, also by a store opened again on the same cache, which reads no
// listing either. A chunk damaged in the cache is fetched again.
func TestCache(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	_, chunks := tb.stored(t, cfg, 6, 8, 16<<10)
	var cnt s3test.Counter
	cfg.Transport = &cnt
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	r, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	opened := cnt.Count(http.MethodGet) // the collection state, the LIST and one listing
	checkAll(t, r, chunks, true)
	if got := cnt.Count(http.MethodGet) - opened; got != len(chunks) {
		t.Fatalf("first reads: %d GETs for %d chunks", got, len(chunks))
	}
	before := cnt.Total()
	checkAll(t, r, chunks, true)
	if got := cnt.Total() - before; got != 0 {
		t.Fatalf("second reads: %d requests, want none", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	before = cnt.Total()
	r2 := tb.open(t, cfg)
	checkAll(t, r2, chunks, true)
	if got := cnt.Total() - before; got != 2 {
		t.Fatalf("reopened on the cache: %d requests, want 2 (the collection state, the LIST)", got)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.CacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, %v; want private (0700)", fi.Mode(), err)
	}

	// Damage every cached chunk: each read fetches it again.
	packs, err := filepath.Glob(filepath.Join(cfg.CacheDir, "chunks", "packs", "pack-*.dat"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("cache packs: %v, %v", packs, err)
	}
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := 100; i < len(b); i += 1000 {
			b[i] ^= 1
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r3 := tb.open(t, cfg)
	before = cnt.Count(http.MethodGet)
	checkAll(t, r3, chunks, true)
	if got := cnt.Count(http.MethodGet) - before; got != len(chunks) {
		t.Fatalf("damaged cache: %d GETs for %d chunks, want each fetched again", got, len(chunks))
	}
}

// TestCacheWrites: with CacheWrites, chunks uploaded are read back
// without a GET.
func TestCacheWrites(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	var cnt s3test.Counter
	cfg.Transport = &cnt
	cfg.CacheDir = t.TempDir()
	cfg.CacheWrites = true
	s, chunks := tb.stored(t, cfg, 7, 4, 8<<10)
	before := cnt.Count(http.MethodGet)
	checkAll(t, s, chunks, true)
	if got := cnt.Count(http.MethodGet) - before; got != 0 {
		t.Fatalf("%d GETs of chunks just written, want 0", got)
	}
}

// failingPuts refuses every PUT.
type failingPuts struct{}

func (failingPuts) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		return nil, errors.New("link down")
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestUploadFailure: a pack that cannot be uploaded is reported by Sync,
// and its chunks are not held (so they are offered again).
func TestUploadFailure(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	cfg.Transport = failingPuts{}
	s := tb.open(t, cfg)
	chunks := randomChunks(8, 3, 4<<10)
	putAll(t, s, chunks)
	if err := s.Sync(t.Context()); err == nil {
		t.Fatal("Sync succeeded with every PUT failing")
	}
	for _, c := range chunks {
		if ok, _ := s.Has(t.Context(), chunk.Sum(c)); ok {
			t.Fatal("a chunk whose upload failed is held")
		}
	}
	if err := s.Sync(t.Context()); err != nil {
		t.Fatalf("second Sync, nothing new: %v", err)
	}
}

// TestCloseUnsynced: Close says that chunks not synced were dropped.
func TestCloseUnsynced(t *testing.T) {
	tb := newTestBed(t)
	s, err := Open(t.Context(), tb.config())
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, s, randomChunks(9, 2, 100))
	if err := s.Close(); err == nil {
		t.Fatal("Close dropped unsynced chunks without saying so")
	}
}

// TestEnvironment: credentials and endpoint the standard AWS way, from
// the environment alone.
func TestEnvironment(t *testing.T) {
	tb := newTestBed(t)
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": tb.srv.AccessKey, "AWS_SECRET_ACCESS_KEY": tb.srv.SecretKey,
		"AWS_ENDPOINT_URL": tb.srv.Endpoint, "AWS_REGION": tb.srv.Region,
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_PROFILE": "", "AWS_SESSION_TOKEN": "", "AWS_EC2_METADATA_DISABLED": "true",
	} {
		t.Setenv(k, v)
	}
	s := tb.open(t, Config{URL: "s3://" + tb.bucket + "/env", PathStyle: true})
	data := []byte("from the environment")
	if err := s.Put(t.Context(), chunk.Sum(data), data); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}

	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if _, err := Open(t.Context(), Config{URL: "s3://" + tb.bucket + "/env", PathStyle: true}); err == nil {
		t.Fatal("opened with a wrong secret key")
	}
}

func TestNoBucket(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	cfg.URL = "s3://no-such-bucket/x"
	if _, err := Open(t.Context(), cfg); !errors.Is(err, ErrNoBucket) {
		t.Fatalf("Open of a missing bucket = %v, want ErrNoBucket", err)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in             string
		bucket, prefix string
		ok             bool
	}{
		{"s3://b", "b", "", true},
		{"s3://b/", "b", "", true},
		{"s3://b/p", "b", "p/", true},
		{"s3://b/p/q/", "b", "p/q/", true},
		{"s3:///p", "", "", false},
		{"http://b/p", "", "", false},
		{"s3://b/p/../q", "", "", false},
		{"s3://b/p//q", "", "", false},
		{"s3://user@b/p", "", "", false},
		{"s3://b/p?x=1", "", "", false},
		{"b/p", "", "", false},
	} {
		b, p, err := ParseURL(tc.in)
		if (err == nil) != tc.ok || b != tc.bucket || p != tc.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.in, b, p, err, tc.bucket, tc.prefix, tc.ok)
		}
	}
}

// TestPrefetch: chunks prefetched come in one GET per run of a pack, and
// are then read without a request; a damaged one is left to Get to report.
func TestPrefetch(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	cfg.PackSize = 128 << 10
	w, chunks := tb.stored(t, cfg, 40, 24, 16<<10)
	packs := w.Packs()
	if packs < 2 {
		t.Fatalf("%d packs, want several", packs)
	}
	bad := chunk.Sum(chunks[3])
	name, l := locate(t, w, bad)
	tb.corrupt(t, w, packKey(name), l.off)

	var cnt s3test.Counter
	cfg.Transport = &cnt
	cfg.CacheDir = t.TempDir()
	r := tb.open(t, cfg)
	ids := make([]chunk.ID, len(chunks))
	for i, c := range chunks {
		ids[i] = chunk.Sum(c)
	}
	before := cnt.Count(http.MethodGet)
	if err := r.Prefetch(t.Context(), ids); err != nil {
		t.Fatal(err)
	}
	if got := cnt.Count(http.MethodGet) - before; got != packs {
		t.Fatalf("prefetch of %d chunks in %d packs: %d GETs, want one a pack", len(ids), packs, got)
	}
	before = cnt.Total()
	for i, c := range chunks {
		got, err := r.Get(t.Context(), ids[i])
		var inv *chunk.InvalidChunkError
		switch {
		case i == 3 && !errors.As(err, &inv):
			t.Fatalf("damaged chunk: %v, want InvalidChunkError", err)
		case i != 3 && (err != nil || !bytes.Equal(got, c)):
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if got := cnt.Total() - before; got != 1 {
		t.Fatalf("reads after prefetch: %d requests, want 1 (the damaged chunk, again)", got)
	}
}

// TestFetch: chunks fetched come in one GET per run of a pack, verified,
// without a cache; a damaged one is an InvalidChunkError, one not stored a
// MissingError before any GET.
func TestFetch(t *testing.T) {
	tb := newTestBed(t)
	cfg := tb.config()
	cfg.PackSize = 128 << 10
	w, chunks := tb.stored(t, cfg, 40, 24, 16<<10)
	// The chunks compress (half of each is zeros) and Fetch hands them
	// over compressed as well; two that do not are raw.
	rng := rand.New(rand.NewPCG(41, 1))
	incompressible := [][]byte{make([]byte, 16<<10), make([]byte, 16<<10)}
	for _, c := range incompressible {
		for j := range c {
			c[j] = byte(rng.Uint32())
		}
	}
	putAll(t, w, incompressible)
	if err := w.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	chunks = append(chunks, incompressible...)
	packs := w.Packs()
	var cnt s3test.Counter
	cfg.Transport = &cnt
	r := tb.open(t, cfg)
	ids := make([]chunk.ID, len(chunks))
	want := map[chunk.ID][]byte{}
	for i, c := range chunks {
		ids[i] = chunk.Sum(c)
		want[ids[i]] = c
	}
	got := map[chunk.ID]int{}
	compressed := 0
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	before := cnt.Count(http.MethodGet)
	err = r.Fetch(t.Context(), append(ids, ids[0]), func(id chunk.ID, data, zstd []byte, raw bool) error {
		if !bytes.Equal(data, want[id]) {
			t.Errorf("chunk %s: wrong bytes", id.Short())
		}
		if zstd != nil {
			if raw {
				t.Errorf("chunk %s: compressed and raw", id.Short())
			}
			if d, err := chunk.Decompress(dec, id, chunk.CodecZstd, zstd, "fetched"); err != nil || !bytes.Equal(d, data) {
				t.Errorf("chunk %s: its compressed form is not its content (%v)", id.Short(), err)
			}
		}
		if zstd != nil {
			compressed++
		} else if !raw {
			t.Errorf("chunk %s: neither compressed nor raw", id.Short())
		}
		got[id]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || compressed != len(want)-len(incompressible) {
		t.Fatalf("fetched %d chunks (%d compressed), want %d (%d)", len(got), compressed, len(want), len(want)-len(incompressible))
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("chunk %s handed %d times", id.Short(), n)
		}
	}
	if n := cnt.Count(http.MethodGet) - before; n != packs {
		t.Fatalf("fetch of %d chunks in %d packs: %d GETs, want one a pack", len(ids), packs, n)
	}

	before = cnt.Count(http.MethodGet)
	var missing *MissingError
	absent := chunk.Sum([]byte("never stored"))
	if err := r.Fetch(t.Context(), []chunk.ID{ids[0], absent}, func(chunk.ID, []byte, []byte, bool) error { return nil }); !errors.As(err, &missing) || len(missing.IDs) != 1 || missing.IDs[0] != absent {
		t.Fatalf("fetch of a chunk not stored: %v", err)
	}
	if n := cnt.Count(http.MethodGet) - before; n != 0 {
		t.Fatalf("a fetch refused for a missing chunk made %d GETs", n)
	}

	name, l := locate(t, w, ids[3])
	tb.corrupt(t, w, packKey(name), l.off)
	var inv *chunk.InvalidChunkError
	if err := r.Fetch(t.Context(), ids[3:4], func(chunk.ID, []byte, []byte, bool) error {
		t.Error("a damaged chunk was handed over")
		return nil
	}); !errors.As(err, &inv) {
		t.Fatalf("fetch of a damaged chunk: %v, want InvalidChunkError", err)
	}
}
