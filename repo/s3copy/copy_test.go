package s3copy

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/s3test"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/repo/s3versions"
)

// byteCounter counts the body bytes of the PUTs it carries and of the
// answers to the GETs: what crosses the link to the bucket each way.
type byteCounter struct {
	put, get atomic.Int64
}

func (c *byteCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && req.ContentLength > 0 {
		c.put.Add(req.ContentLength)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && req.Method == http.MethodGet && resp.ContentLength > 0 {
		c.get.Add(resp.ContentLength)
	}
	return resp, err
}

// bed is a versitygw with one bucket and one repository prefix in it.
type bed struct {
	srv *s3test.Server
	url string
}

func newBed(t testing.TB) *bed {
	srv := s3test.Start(t)
	return &bed{srv: srv, url: "s3://" + srv.NewBucket(t) + "/fleet"}
}

// sets opens the bucket's repository, its requests carried by tr, with
// small packs.
func (b *bed) sets(t testing.TB, tr http.RoundTripper) *s3versions.Sets {
	t.Helper()
	st, err := s3store.Open(t.Context(), s3store.Config{URL: b.url, Endpoint: b.srv.Endpoint, PathStyle: true,
		Region: b.srv.Region, Credentials: b.srv.Credentials(), Transport: tr,
		// Several packs a version: packs filled while chunks are
		// copied upload in the background.
		PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return s3versions.New(st)
}

// image is one image of a test version.
type image struct {
	name string
	p    chunk.Params
	data []byte
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// images are a disk (content-defined chunks) and a RAM block (4 KiB
// pages) of random content.
func images(seed uint64, disk, ram int) []image {
	return []image{
		{name: "disk-vda", p: chunk.DefaultCDC(), data: randomBytes(seed, disk)},
		{name: "ram-pc.ram", p: chunk.Pages(), data: randomBytes(seed+1, ram)},
	}
}

// change rewrites n scattered 64 KiB pieces of every image, returning
// copies and the bytes changed.
func change(ims []image, seed uint64, frac float64) ([]image, int64) {
	r := rand.New(rand.NewPCG(seed, 3))
	var changed int64
	out := make([]image, len(ims))
	for i, im := range ims {
		out[i] = im
		out[i].data = bytes.Clone(im.data)
		pieces := len(im.data) / (64 << 10)
		for _, slot := range r.Perm(pieces)[:max(1, int(float64(pieces)*frac))] {
			off := slot * 64 << 10
			for j := off; j < off+64<<10; j++ {
				out[i].data[j] = byte(r.Uint32())
			}
			changed += 64 << 10
		}
	}
	return out, changed
}

// commitLocal stores ims in the node repository r and commits them as a
// version of set made by node, after parent.
func commitLocal(t testing.TB, r *repo.Repo, set, node string, parent repo.Digest, ims []image, meta []byte) *repo.Version {
	t.Helper()
	ctx := t.Context()
	st, err := r.OpenStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := &repo.Version{Set: set, Parent: parent, Node: node, Created: time.Now().UTC()}
	var idx []*chunk.Index
	for _, im := range ims {
		x, _, err := chunk.Build(ctx, chunk.Bytes(im.data), im.p, chunk.Options{Chunk: func(e chunk.Entry, data []byte) error {
			return st.PutVerified(ctx, e.ID, data, nil, false)
		}})
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, x)
		v.Images = append(v.Images, repo.Image{Name: im.name})
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Seal(idx, meta); err != nil {
		t.Fatal(err)
	}
	c, err := r.Commit(ctx, v, idx, meta, repo.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Version
}

func openRepo(t testing.TB) *repo.Repo {
	t.Helper()
	r, err := repo.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// upload uploads set's version seq of r to sets.
func upload(t testing.TB, r *repo.Repo, sets *s3versions.Sets, set string, seq uint64, opt Options) (Stats, error) {
	t.Helper()
	st, err := r.OpenStoreReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return Upload(t.Context(), r, st, sets, set, seq, opt)
}

// download pulls set's version seq from sets into r.
func download(t testing.TB, sets *s3versions.Sets, set string, seq uint64, r *repo.Repo, opt Options) (Stats, error) {
	t.Helper()
	return downloadCtx(t.Context(), t, sets, set, seq, r, opt)
}

func downloadCtx(ctx context.Context, t testing.TB, sets *s3versions.Sets, set string, seq uint64, r *repo.Repo, opt Options) (Stats, error) {
	t.Helper()
	st, err := r.OpenStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return Download(ctx, sets, set, seq, r, st, opt)
}

// checkHolds fails unless r's head of set is v (same digest, parent and
// node) and its images read back as ims, byte for byte.
func checkHolds(t testing.TB, r *repo.Repo, v *repo.Version, ims []image, meta []byte) {
	t.Helper()
	h, err := r.Head(v.Set)
	if err != nil || h == nil {
		t.Fatalf("no head of %s in %s: %v", v.Set, r.Dir(), err)
	}
	if h.Digest != v.Digest || h.Parent != v.Parent || h.Node != v.Node || !h.Created.Equal(v.Created) {
		t.Fatalf("head %s (parent %s, node %q), want %s (parent %s, node %q)", h.Digest.Short(), h.Parent.Short(), h.Node, v.Digest.Short(), v.Parent.Short(), v.Node)
	}
	st, err := r.OpenStoreReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, im := range ims {
		x, err := r.Index(v.Set, h.Seq, im.name)
		if err != nil {
			t.Fatal(err)
		}
		var got writerAt = make([]byte, x.Size)
		if err := chunk.WriteImage(t.Context(), got, x, st); err != nil {
			t.Fatalf("read %s back: %v", im.name, err)
		}
		if !bytes.Equal(got, im.data) {
			t.Fatalf("image %s differs from the one uploaded", im.name)
		}
	}
	if m, err := r.Meta(v.Set, h.Seq); err != nil || !bytes.Equal(m, meta) {
		t.Fatalf("metadata %q (%v), want %q", m, err, meta)
	}
}

type writerAt []byte

func (w writerAt) WriteAt(p []byte, off int64) (int, error) { return copy(w[off:], p), nil }

// TestFanOut: the office uploads a version once; 8 pullers each pull it
// into their own repository and hold it byte for byte. The office PUTs
// the version's chunks once; each puller GETs them once. A version with
// 1% changed uploads the change only, and a puller that holds its parent
// downloads the change only.
func TestFanOut(t *testing.T) {
	b := newBed(t)
	const pullers = 8
	office := openRepo(t)
	v1ims := images(1, 8<<20, 4<<20)
	v1 := commitLocal(t, office, "vm", "office", repo.Digest{}, v1ims, []byte("manifest 1"))
	var up byteCounter
	osets := b.sets(t, &up)
	st, err := upload(t, office, osets, "vm", 0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(v1ims[0].data) + len(v1ims[1].data))
	if st.Copied != st.Chunks || st.CopiedBytes != total || !st.Current || st.Existed {
		t.Fatalf("first upload: %+v; want every chunk (%d bytes), current", st, total)
	}
	// Random data does not compress: what the office PUT is the chunks
	// once, plus records, indexes and listings (≈ 50 bytes a chunk).
	overhead := int64(st.Chunks)*100 + 64<<10
	if put := up.put.Load(); put < total || put > total+overhead {
		t.Fatalf("the office PUT %d bytes for a version of %d (%d chunks): want it once", put, total, st.Chunks)
	}
	t.Logf("upload: %d chunks, %d bytes; PUT %d bytes", st.Chunks, total, up.put.Load())

	homes := make([]*repo.Repo, pullers)
	counters := make([]byteCounter, pullers)
	var wg sync.WaitGroup
	errs := make([]error, pullers)
	for i := range pullers {
		homes[i] = openRepo(t)
		sets := b.sets(t, &counters[i])
		wg.Go(func() {
			st, err := homes[i].OpenStore(t.Context())
			if err != nil {
				errs[i] = err
				return
			}
			defer st.Close()
			_, errs[i] = Download(t.Context(), sets, "vm", 0, homes[i], st, Options{})
		})
	}
	wg.Wait()
	for i := range pullers {
		if errs[i] != nil {
			t.Fatalf("puller %d: %v", i, errs[i])
		}
		checkHolds(t, homes[i], v1, v1ims, []byte("manifest 1"))
		if got := counters[i].get.Load(); got < total || got > total+overhead {
			t.Fatalf("puller %d downloaded %d bytes for a version of %d", i, got, total)
		}
		t.Logf("puller %d: GET %d bytes for a version of %d", i, counters[i].get.Load(), total)
	}
	if put := up.put.Load(); put > total+overhead {
		t.Fatalf("the office PUT %d bytes after %d pulls: the uplink carries a version once", put, pullers)
	}

	// 1% changed: the second upload sends the change.
	v2ims, changed := change(v1ims, 2, 0.01)
	v2 := commitLocal(t, office, "vm", "office", v1.Digest, v2ims, []byte("manifest 2"))
	before := up.put.Load()
	st2, err := upload(t, office, osets, "vm", 0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A 64 KiB rewrite changes the chunks it touches and, with
	// content-defined chunks, up to two neighbours of at most 64 KiB.
	if st2.CopiedBytes < changed || st2.CopiedBytes > 3*changed || !st2.Current {
		t.Fatalf("second upload copied %d bytes for %d changed: %+v", st2.CopiedBytes, changed, st2)
	}
	if put := up.put.Load() - before; put > st2.CopiedBytes+overhead {
		t.Fatalf("second upload PUT %d bytes for %d bytes of new chunks", put, st2.CopiedBytes)
	}
	t.Logf("second upload: %d bytes changed, %d chunks (%d bytes) copied, PUT %d bytes", changed, st2.Copied, st2.CopiedBytes, up.put.Load()-before)

	// A puller holding v1 fetches only the new chunks.
	before = counters[0].get.Load()
	sets := b.sets(t, &counters[0])
	pst, err := download(t, sets, "vm", 0, homes[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	if pst.Copied != st2.Copied || !pst.Current {
		t.Fatalf("pull after the change copied %d chunks, the upload %d: %+v", pst.Copied, st2.Copied, pst)
	}
	if got := counters[0].get.Load() - before; got > st2.CopiedBytes+overhead {
		t.Fatalf("pull after the change downloaded %d bytes for %d bytes of new chunks", got, st2.CopiedBytes)
	}
	t.Logf("pull after the change: %d chunks, GET %d bytes", pst.Copied, counters[0].get.Load()-before)
	checkHolds(t, homes[0], v2, v2ims, []byte("manifest 2"))
	if ok, err := isParent(homes[0], v2); err != nil || !ok {
		t.Fatalf("the puller's v2 does not follow its v1 (%v)", err)
	}
}

// isParent reports whether r holds v's parent as the version before it.
func isParent(r *repo.Repo, v *repo.Version) (bool, error) {
	links, err := r.Ancestry(v.Set, v.Digest, 2)
	if err != nil {
		return false, err
	}
	return len(links) >= 1 && links[0].Parent == v.Parent, nil
}

// TestDivergedIsKeptNotCurrent: a version whose parent is not the bucket's
// current one is kept without becoming current, unless forced; the same on
// a pull into a node whose head it does not follow.
func TestDivergedIsKeptNotCurrent(t *testing.T) {
	b := newBed(t)
	sets := b.sets(t, nil)
	office, other := openRepo(t), openRepo(t)
	base := images(10, 1<<20, 256<<10)
	v1 := commitLocal(t, office, "vm", "office", repo.Digest{}, base, nil)
	if _, err := upload(t, office, sets, "vm", 0, Options{}); err != nil {
		t.Fatal(err)
	}
	a, _ := change(base, 11, 0.05)
	va := commitLocal(t, office, "vm", "office", v1.Digest, a, nil)
	if _, err := upload(t, office, sets, "vm", 0, Options{}); err != nil {
		t.Fatal(err)
	}
	// The other node ran its own copy from v1 (its own first version).
	c, _ := change(base, 12, 0.05)
	vc := commitLocal(t, other, "vm", "other", v1.Digest, c, nil)
	st, err := upload(t, other, sets, "vm", 0, Options{})
	if !errors.Is(err, repo.ErrDiverged) || st.Current || st.Seq == 0 {
		t.Fatalf("upload of a diverged copy: %v, %+v; want kept, not current", err, st)
	}
	h, err := sets.Head(t.Context(), "vm")
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := h.CurrentEntry()
	if cur.Digest != chunk.ID(va.Digest) || len(h.Versions) != 3 {
		t.Fatalf("after a diverged upload the current version is %s of %d, want %s of 3", cur.Digest.Short(), len(h.Versions), va.Digest.Short())
	}
	// The office's node pulls the other copy: kept beside its head.
	pst, err := download(t, sets, "vm", st.Seq, office, Options{})
	if !errors.Is(err, repo.ErrDiverged) || pst.Current {
		t.Fatalf("pull of the diverged copy: %v, %+v", err, pst)
	}
	if h, _ := office.Head("vm"); h.Digest != va.Digest {
		t.Fatal("a pull of a diverged copy moved the head")
	}
	// Forced, both ways.
	if st, err := upload(t, other, sets, "vm", 0, Options{Force: true}); err != nil || !st.Current || !st.Existed {
		t.Fatalf("forced upload: %v, %+v", err, st)
	}
	if pst, err := download(t, sets, "vm", 0, office, Options{Force: true}); err != nil || !pst.Current {
		t.Fatalf("forced pull: %v, %+v", err, pst)
	}
	checkHolds(t, office, vc, c, nil)
}

// TestUploadFollowsLineageTheBucketLacks: a version two checkpoints after
// the bucket's current one (the one between never uploaded) is a
// fast-forward by the node's lineage.
func TestUploadFollowsLineageTheBucketLacks(t *testing.T) {
	b := newBed(t)
	sets := b.sets(t, nil)
	office, home := openRepo(t), openRepo(t)
	ims := images(20, 1<<20, 256<<10)
	v1 := commitLocal(t, office, "vm", "office", repo.Digest{}, ims, nil)
	if _, err := upload(t, office, sets, "vm", 0, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := download(t, sets, "vm", 0, home, Options{}); err != nil {
		t.Fatal(err)
	}
	ims2, _ := change(ims, 21, 0.02)
	v2 := commitLocal(t, office, "vm", "office", v1.Digest, ims2, nil)
	ims3, _ := change(ims2, 22, 0.02)
	v3 := commitLocal(t, office, "vm", "office", v2.Digest, ims3, nil)
	if st, err := upload(t, office, sets, "vm", 0, Options{}); err != nil || !st.Current {
		t.Fatalf("upload of v3 over v1: %v, %+v", err, st)
	}
	// The bucket lacks v2, so the home node cannot tell v3 follows its
	// v1: kept beside it. (A pull of v2 first would make it a fast-forward.)
	if st, err := download(t, sets, "vm", 0, home, Options{}); !errors.Is(err, repo.ErrDiverged) || st.Seq == 0 || st.Current {
		t.Fatalf("pull of v3 over v1 without v2's link: %v, %+v; want kept, not current", err, st)
	}
	if st, err := download(t, sets, "vm", 0, home, Options{Force: true}); err != nil || !st.Current || !st.Existed {
		t.Fatalf("forced pull of v3: %v, %+v", err, st)
	}
	checkHolds(t, home, v3, ims3, nil)
}

// TestDamagedChunkIsRefused: a chunk damaged in the bucket fails the pull,
// which commits nothing.
func TestDamagedChunkIsRefused(t *testing.T) {
	b := newBed(t)
	sets := b.sets(t, nil)
	office, home := openRepo(t), openRepo(t)
	commitLocal(t, office, "vm", "office", repo.Digest{}, images(30, 1<<20, 0), nil)
	if _, err := upload(t, office, sets, "vm", 0, Options{}); err != nil {
		t.Fatal(err)
	}
	damageAPack(t, b)
	_, err := download(t, b.sets(t, nil), "vm", 0, home, Options{})
	var inv *chunk.InvalidChunkError
	if !errors.As(err, &inv) {
		t.Fatalf("pull of a damaged chunk: %v, want InvalidChunkError", err)
	}
	if h, err := home.Head("vm"); err != nil || h != nil {
		t.Fatalf("after a failed pull the node has head %v (%v)", h, err)
	}
}

// damageAPack flips a byte in the middle of the bucket's first pack.
func damageAPack(t testing.TB, b *bed) {
	t.Helper()
	bucket, prefix, err := s3store.ParseURL(b.url)
	if err != nil {
		t.Fatal(err)
	}
	c := b.srv.Client()
	out, err := c.ListObjectsV2(t.Context(), listInput(bucket, prefix+"packs/"))
	if err != nil || len(out.Contents) == 0 {
		t.Fatalf("list packs: %v", err)
	}
	o := out.Contents[0]
	b.srv.Corrupt(t, bucket, *o.Key, *o.Size/2)
}

// TestCancelledPullCommitsNothing: a pull whose context ends while chunks
// arrive leaves the node without the version, and a later pull completes.
func TestCancelledPullCommitsNothing(t *testing.T) {
	b := newBed(t)
	sets := b.sets(t, nil)
	office, home := openRepo(t), openRepo(t)
	ims := images(40, 4<<20, 1<<20)
	v := commitLocal(t, office, "vm", "office", repo.Digest{}, ims, nil)
	if _, err := upload(t, office, sets, "vm", 0, Options{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cs := &cancelAfter{n: 10, cancel: cancel}
	st, err := home.OpenStore(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cs.chunkStore = st
	_, err = Download(ctx, b.sets(t, nil), "vm", 0, home, cs, Options{})
	st.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v", err)
	}
	if h, err := home.Head("vm"); err != nil || h != nil {
		t.Fatalf("after a cancelled pull the node has head %v (%v)", h, err)
	}
	if _, err := download(t, b.sets(t, nil), "vm", 0, home, Options{}); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, home, v, ims, nil)
}

// cancelAfter cancels after n chunks stored.
type cancelAfter struct {
	chunkStore
	n      int
	cancel func()
}

func (c *cancelAfter) PutVerified(ctx context.Context, id chunk.ID, data, zstd []byte, raw bool) error {
	if c.n--; c.n == 0 {
		c.cancel()
	}
	return c.chunkStore.PutVerified(ctx, id, data, zstd, raw)
}

func listInput(bucket, prefix string) *s3.ListObjectsV2Input {
	return &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix}
}
