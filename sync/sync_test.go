package sync

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	gosync "sync"
	"testing"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// peers is a receiver serving a repository on loopback and a sender
// identity allowed to push to it.
type peers struct {
	repo   *Repo
	addr   string
	srvID  transport.ID
	client *transport.Identity
	errs   chan error
}

func newPeers(t testing.TB) *peers { return newPeersWith(t, nil) }

// newPeersWith is newPeers with the receiver set up by setup.
func newPeersWith(t testing.TB, setup func(*Receiver)) *peers {
	t.Helper()
	repo, err := OpenRepo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	return newPeersOn(t, repo, setup)
}

// newPeersOn is newPeersWith receiving into repo.
func newPeersOn(t testing.TB, repo *Repo, setup func(*Receiver)) *peers {
	t.Helper()
	srv, cli := transporttest.Identity(t), transporttest.Identity(t)
	l := transporttest.Listen(t, srv, transport.AllowIDs(cli.ID()), transport.Config{})
	p := &peers{repo: repo, addr: l.Addr().String(), srvID: srv.ID(), client: cli, errs: make(chan error, 100)}
	rcv := &Receiver{Repo: repo, Logger: testLogger(t, nil)}
	if setup != nil {
		setup(rcv)
	}
	serveAll(t, l, rcv, func(err error) { p.errs <- err })
	return p
}

// serveAll serves every connection l accepts with rcv (ServeListener)
// until the test ends, telling done how each ended.
func serveAll(t testing.TB, l *transport.Listener, rcv *Receiver, done func(error)) {
	ctx, cancel := context.WithCancel(context.Background())
	rcv.Served = done
	var wg gosync.WaitGroup
	wg.Go(func() { rcv.ServeListener(ctx, l) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func (p *peers) push(t testing.TB, ctx context.Context, s *Sender, v *Version) (*Result, error) {
	t.Helper()
	c, err := transport.Dial(ctx, p.addr, p.client, p.srvID, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return s.Push(ctx, c, v)
}

func randomData(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// imageVersion indexes data as one image of a version.
func imageVersion(t testing.TB, set string, images map[string][]byte) *Version {
	t.Helper()
	v := &Version{Set: set, Meta: []byte(`{"test":true}`)}
	for _, name := range []string{"disk", "ram", "extra"} {
		data, ok := images[name]
		if !ok {
			continue
		}
		p := chunk.DefaultCDC()
		if name == "ram" {
			p = chunk.Pages()
		}
		x, _, err := chunk.Build(t.Context(), chunk.Bytes(data), p, chunk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		v.Images = append(v.Images, Image{Name: name, Index: x, Source: ReaderSource{chunk.Bytes(data)}})
	}
	return v
}

func assertMaterialized(t *testing.T, repo *Repo, set string, images map[string][]byte) {
	t.Helper()
	for name, want := range images {
		got, err := os.ReadFile(repo.ImagePath(set, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("materialized %s/%s differs from what was pushed (%d vs %d bytes)", set, name, len(got), len(want))
		}
	}
}

func TestPushSendsOnlyWhatChanged(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(1, 1))
	disk := append(randomData(r, 6<<20), make([]byte, 2<<20)...)
	ram := randomData(r, 1<<20)
	s := &Sender{StateDir: t.TempDir()}
	images := map[string][]byte{"disk": disk, "ram": ram}
	res, err := p.push(t, ctx, s, imageVersion(t, "vm", images))
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 1 || res.ChunkBytes != 7<<20 {
		t.Fatalf("first push: version %d, sent %d chunk bytes, want 1 and %d", res.Version, res.ChunkBytes, 7<<20)
	}
	assertMaterialized(t, p.repo, "vm", images)

	// Change 5 scattered 64 KiB extents of the disk and 3 pages of RAM.
	var changed int64
	for _, off := range []int{0, 1 << 20, 3 << 20, 5<<20 + 4096, 7 << 20} {
		copy(disk[off:off+64<<10], randomData(r, 64<<10))
		changed += 64 << 10
	}
	for _, off := range []int{0, 40960, 1<<20 - 4096} {
		copy(ram[off:off+4096], randomData(r, 4096))
		changed += 4096
	}
	res, err = p.push(t, ctx, s, imageVersion(t, "vm", images))
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.IndexFetched {
		t.Fatalf("second push: version %d, index fetched %v", res.Version, res.IndexFetched)
	}
	if res.ChunkBytes < changed || res.ChunkBytes > 2*changed {
		t.Fatalf("second push sent %d chunk bytes for %d changed", res.ChunkBytes, changed)
	}
	assertMaterialized(t, p.repo, "vm", images)

	// Known changed ranges: only the changed bytes travel, as patches.
	prev := imageVersion(t, "vm", images).Images[0].Index
	var ranges []chunk.Range
	for _, off := range []int{512 << 10, 2<<20 + 100} {
		copy(disk[off:off+8192], randomData(r, 8192))
		ranges = append(ranges, chunk.Range{Off: int64(off), Len: 8192})
	}
	v := imageVersion(t, "vm", images)
	v.Images[0].Base, v.Images[0].Changed = prev, ranges
	res, err = p.push(t, ctx, s, v)
	if err != nil {
		t.Fatal(err)
	}
	if res.Patched == 0 || res.DataBytes > 2*8192+1024 {
		t.Fatalf("push with changed ranges: %d patched, %d data bytes for 16 KiB changed", res.Patched, res.DataBytes)
	}
	assertMaterialized(t, p.repo, "vm", images)

	// Ranges that miss a change make patches that do not verify: they are
	// refused and the chunks asked for again, whole.
	prev = v.Images[0].Index
	copy(disk[3<<20:], randomData(r, 4096))
	copy(disk[4<<20:], randomData(r, 4096))
	v = imageVersion(t, "vm", images)
	v.Images[0].Base, v.Images[0].Changed = prev, []chunk.Range{{Off: 3 << 20, Len: 4096}}
	res, err = p.push(t, ctx, s, v)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rounds != 2 {
		t.Fatalf("a lying patch took %d rounds, want 2", res.Rounds)
	}
	assertMaterialized(t, p.repo, "vm", images)

	// Unchanged: nothing to send, and no new version.
	res, err = p.push(t, ctx, s, imageVersion(t, "vm", images))
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunksSent != 0 || res.ChangedBytes != 0 || res.Version != 4 {
		t.Fatalf("unchanged push: %+v", res)
	}

	// A sender that forgot everything makes a version with no parent: it
	// is stored, not made current, until forced; its chunks the receiver
	// holds do not travel.
	before := slices.Clone(disk)
	copy(disk[2<<20:], randomData(r, 4096))
	forgetful := &Sender{StateDir: t.TempDir()}
	res, err = p.push(t, ctx, forgetful, imageVersion(t, "vm", images))
	if !errors.Is(err, repo.ErrDiverged) || res == nil || !res.Diverged || res.ChunkBytes > 128<<10 {
		t.Fatalf("push without state: %v, %+v", err, res)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": before, "ram": images["ram"]})
	forgetful.Force = true
	if res, err = p.push(t, ctx, forgetful, imageVersion(t, "vm", images)); err != nil || res.ChunksSent != 0 {
		t.Fatalf("forced push: %v, %+v", err, res)
	}
	assertMaterialized(t, p.repo, "vm", images)
	// The forced version is the one stored before; the line it replaced
	// is listed as diverged.
	if vs, _ := p.repo.List(); len(vs) != 1 || len(vs[0].Versions) != 5 || vs[0].Current.Version != 5 || !slices.Equal(vs[0].Diverged, []uint64{4}) {
		t.Fatalf("repository lists %+v", vs)
	}
}

// corrupting damages the first read of some chunks.
type corrupting struct {
	src   Source
	mu    gosync.Mutex
	left  int
	every bool
}

func (c *corrupting) ReadChunk(ctx context.Context, e chunk.Entry) ([]byte, error) {
	b, err := c.src.ReadChunk(ctx, e)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.every || c.left > 0 {
		c.left--
		b[len(b)/2] ^= 0xff
	}
	return b, nil
}

// rawSender skips the sender's own verification so that damaged chunks
// reach the wire, as they would from a faulty network or a malicious peer.
func TestDamagedChunksAreRefusedAndFetchedAgain(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(2, 2))
	disk := randomData(r, 2<<20)
	v := imageVersion(t, "vm", map[string][]byte{"disk": disk})
	src := &corrupting{src: v.Images[0].Source, left: 5}
	v.Images[0].Source = src
	res, err := p.push(t, ctx, &Sender{unverified: true}, v)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rounds != 2 {
		t.Fatalf("took %d rounds, want 2 (the damaged chunks asked again)", res.Rounds)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk})

	// Chunks that are always damaged: the push fails and version 1 stays.
	disk2 := randomData(r, 1<<20)
	v2 := imageVersion(t, "vm", map[string][]byte{"disk": disk2})
	v2.Images[0].Source = &corrupting{src: v2.Images[0].Source, every: true}
	_, err = p.push(t, ctx, &Sender{unverified: true}, v2)
	if !errors.Is(err, ErrBadChunks) {
		t.Fatalf("push of always-damaged chunks: %v, want ErrBadChunks", err)
	}
	if m, err := p.repo.Current("vm"); err != nil || m.Version != 1 {
		t.Fatalf("current version after a failed push: %+v, %v", m, err)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk})
	assertNothingDamagedStored(t, p.repo, v2.Images[0].Index)
}

// assertNothingDamagedStored checks that every chunk of x the store holds
// reads back whole.
func assertNothingDamagedStored(t *testing.T, repo *Repo, x *chunk.Index) {
	t.Helper()
	st := readStore(t, repo)
	for _, e := range x.Entries {
		if ok, _ := st.Has(t.Context(), e.ID); ok && !e.Zero {
			if _, err := st.Get(t.Context(), e.ID); err != nil {
				t.Fatalf("store holds a damaged chunk: %v", err)
			}
		}
	}
}

// An image that changes after it was indexed: the receiver refuses the
// chunks that no longer match, and the sender, checking what it is asked
// for again, stops with an error that says what to do. The receiver keeps
// its version and stores nothing damaged.
func TestImageChangedSinceIndexed(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(5, 5))
	disk := randomData(r, 2<<20)
	if _, err := p.push(t, ctx, &Sender{}, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatal(err)
	}
	disk2 := randomData(r, 2<<20)
	v2 := imageVersion(t, "vm", map[string][]byte{"disk": disk2})
	v2.Images[0].Source = &corrupting{src: v2.Images[0].Source, every: true}
	_, err := p.push(t, ctx, &Sender{}, v2)
	var bad *chunk.InvalidChunkError
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "changed since it was indexed") {
		t.Fatalf("push of an image that changed: %v, want the sender's InvalidChunkError", err)
	}
	if m, err := p.repo.Current("vm"); err != nil || m.Version != 1 {
		t.Fatalf("current version after a failed push: %+v, %v", m, err)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk})
	assertNothingDamagedStored(t, p.repo, v2.Images[0].Index)
}

func TestInterruptedPushResumes(t *testing.T) {
	p := newPeers(t)
	r := rand.New(rand.NewPCG(3, 3))
	disk := randomData(r, 8<<20)
	v := imageVersion(t, "vm", map[string][]byte{"disk": disk})
	ctx, cancel := context.WithCancel(t.Context())
	var sent int64
	var mu gosync.Mutex
	s := &Sender{StateDir: t.TempDir(), Streams: 1, Progress: func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		sent += n
		if sent >= 4<<20 {
			cancel()
		}
	}}
	if _, err := p.push(t, ctx, s, v); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted push: %v, want context.Canceled", err)
	}
	if m, _ := p.repo.Current("vm"); m != nil {
		t.Fatalf("a version was committed by an interrupted push: %+v", m)
	}
	// Once the receiver is done with the interrupted push, what it stored
	// is what the next push need not send. (What the sender counted as sent
	// may still have been in flight, and lost, when it stopped.)
	<-p.errs
	var total, held int64
	seen := map[chunk.ID]bool{}
	for _, e := range v.Images[0].Index.Entries {
		if e.Zero || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		total += e.Length
		if ok, err := readStore(t, p.repo).Has(t.Context(), e.ID); err != nil {
			t.Fatal(err)
		} else if ok {
			held += e.Length
		}
	}
	if held == 0 || held == total {
		t.Fatalf("the interrupted push left %d of %d bytes stored", held, total)
	}
	s.Progress = nil
	res, err := p.push(t, t.Context(), s, v)
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunkBytes != total-held {
		t.Fatalf("resumed push sent %d bytes; the receiver lacked %d of %d", res.ChunkBytes, total-held, total)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk})
}

func TestBadNamesAreRefused(t *testing.T) {
	for _, name := range []string{"", "..", "../x", "a/b", ".hidden", "x\x00y", string(make([]byte, 200))} {
		if CheckName(name) == nil {
			t.Errorf("CheckName(%q) accepted", name)
		}
	}
	for _, name := range []string{"vm", "disk-vda", "pc.ram", "a_b+c"} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q): %v", name, err)
		}
	}
}

func TestMalformedFrameClosesOnlyThatConnection(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	c, err := transport.Dial(ctx, p.addr, p.client, p.srvID, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{msgHello, 5, 'h', 'e', 'l', 'l', 'o'})
	st.Close()
	if err := <-p.errs; !errors.Is(err, ErrMalformed) {
		t.Fatalf("receiver: %v, want ErrMalformed", err)
	}
	c.Close()
	disk := randomData(rand.New(rand.NewPCG(4, 4)), 1<<20)
	if _, err := p.push(t, ctx, &Sender{}, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatalf("push after a malformed connection: %v", err)
	}
}

func TestRepoIsIntactAfterFailedMaterializeRedo(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(5, 5))
	disk := randomData(r, 1<<20)
	s := &Sender{StateDir: t.TempDir()}
	if _, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatal(err)
	}
	copy(disk[100<<10:], randomData(r, 8192))
	if _, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatal(err)
	}
	// Pretend a crash interrupted the move from version 1 to 2: the state
	// says applying, the file is a mix. Materialize redoes it.
	state := filepath.Join(p.repo.Dir(), "sets", "vm", "images", ".state.json")
	os.WriteFile(state, []byte(`{"version":1,"applying":2}`), 0o644)
	f, _ := os.OpenFile(p.repo.ImagePath("vm", "disk"), os.O_RDWR, 0)
	f.WriteAt(make([]byte, 4096), 100<<10)
	f.Close()
	if err := p.repo.Materialize(ctx, "vm", 2); err != nil {
		t.Fatal(err)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk})
}

func TestPushOverSeveralConnections(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(8, 8))
	images := map[string][]byte{"disk": randomData(r, 4<<20), "ram": randomData(r, 1<<20)}
	s := &Sender{StateDir: t.TempDir(), Conns: 3, Streams: 6, Dial: func(ctx context.Context) (*transport.Conn, error) {
		return transport.Dial(ctx, p.addr, p.client, p.srvID, transport.Config{})
	}, connsFrom: 2 << 20, connsAnyRTT: true}
	res, err := p.push(t, ctx, s, imageVersion(t, "vm", images))
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections != 3 || res.ChunkBytes != 5<<20 {
		t.Fatalf("push over 3 connections: %+v", res)
	}
	assertMaterialized(t, p.repo, "vm", images)

	// A small change travels on the control connection alone.
	images["ram"] = randomData(r, 1<<20)
	if res, err = p.push(t, ctx, s, imageVersion(t, "vm", images)); err != nil {
		t.Fatal(err)
	}
	if res.Connections != 1 {
		t.Fatalf("a push of %d bytes used %d connections, want 1", res.ChunkBytes, res.Connections)
	}
	assertMaterialized(t, p.repo, "vm", images)
	// Data for a session that does not exist is refused.
	c, err := transport.Dial(ctx, p.addr, p.client, p.srvID, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fw := newFrameWriter(st)
	fw.write(msgData, dataHeader{round: 1}.encode())
	fw.flush()
	// The earlier connections ended cleanly (nil); this one must not.
	for err := range p.errs {
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("data for an unknown session: %v", err)
			}
			break
		}
	}
}

// The version's metadata is kept as sent, although the frames after the
// offer reuse the buffer it arrived in.
func TestMetaSurvivesTheOffer(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(10, 10))
	v := imageVersion(t, "vm", map[string][]byte{"disk": randomData(r, 4<<20)})
	// Larger than the frames that follow it, which then reuse its buffer.
	v.Meta = []byte(`{"note":"` + strings.Repeat("kept as sent ", 8<<10) + `"}`)
	if _, err := p.push(t, ctx, &Sender{}, v); err != nil {
		t.Fatal(err)
	}
	got, err := p.repo.Meta("vm", 1)
	if err != nil || string(got) != string(v.Meta) {
		t.Fatalf("metadata after the commit: %q, %v; want %q", got, err, v.Meta)
	}
}

// readStore opens the repository's chunk store for reading, as it is now,
// until the test ends.
func readStore(t *testing.T, r *Repo) *chunk.ReadOnlyPackStore {
	t.Helper()
	st, err := r.Nodes().OpenStoreReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
