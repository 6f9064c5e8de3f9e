package sync

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// rawPush is a hand-driven push: the test writes the frames.
type rawPush struct {
	c   *transport.Conn
	st  *transport.Stream
	w   *frameWriter
	rd  *frameReader
	tok token
	// pending is closed when the frames offerOps writes are written.
	pending chan struct{}
}

func (p *peers) rawPush(t *testing.T, set string) *rawPush {
	t.Helper()
	return p.rawPushVersion(t, set, protocolVersion)
}

// rawPushVersion is rawPush saying hello in protocol version.
func (p *peers) rawPushVersion(t *testing.T, set string, version uint64) *rawPush {
	t.Helper()
	ctx := t.Context()
	c, err := transport.Dial(ctx, p.addr, p.client, p.srvID, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rp := &rawPush{c: c, st: st, w: newFrameWriter(st), rd: newFrameReader(st)}
	rp.send(t, msgHello, hello{version: version, set: set}.encode())
	rp.send(t, msgCandidate, candidates{}.encode())
	b, err := rp.rd.expect(msgBase)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeBase(b)
	if err != nil {
		t.Fatal(err)
	}
	rp.tok = m.session
	return rp
}

// send writes a frame; a receiver that refused the push may have closed
// the stream already, which the outcome then says.
func (rp *rawPush) send(t *testing.T, typ byte, payload []byte) {
	t.Helper()
	if rp.pending != nil {
		<-rp.pending
	}
	if rp.w.write(typ, payload) == nil {
		rp.w.flush()
	}
}

// offerOps offers one image of size bytes cut with params, with ops. It
// writes them while the test reads: a receiver that refuses the offer
// stops reading it.
func (rp *rawPush) offerOps(t *testing.T, size int64, params chunk.Params, ops ...[]op) {
	t.Helper()
	o := offer{images: []offerImage{{name: "img", size: size, params: params}}}
	o.digest = rawDigest(o, ops)
	rp.offerRaw(t, o, ops...)
}

// offerRaw offers o with ops, as offerOps does.
func (rp *rawPush) offerRaw(t *testing.T, o offer, ops ...[]op) {
	t.Helper()
	frames := [][]byte{o.encode()}
	for _, o := range ops {
		frames = append(frames, opsMsg{ops: o}.encode())
	}
	done := make(chan struct{})
	rp.pending = done
	go func() {
		defer close(done)
		for i, f := range frames {
			typ := byte(msgOps)
			if i == 0 {
				typ = msgOffer
			}
			if rp.w.write(typ, f) != nil {
				return
			}
		}
		if rp.w.write(msgOfferEnd, nil) == nil {
			rp.w.flush()
		}
	}()
	t.Cleanup(func() { rp.c.Close(); <-done })
}

// rawDigest is the digest of the version o and ops (no base) build, as the
// receiver computes it; a made-up one when they build none.
func rawDigest(o offer, ops [][]op) repo.Digest {
	oi := o.images[0]
	b := &imageBuilder{name: oi.name, size: oi.size, maxChunk: 1 << 30, max: 1 << 30}
	for _, frame := range ops {
		d := dec{b: opsMsg{ops: frame}.encode()}
		d.uvarint()
		if decodeOpsTo(&d, b) != nil {
			return repo.Digest{1}
		}
	}
	if b.finish() != nil {
		return repo.Digest{1}
	}
	v := repo.Version{Set: "vm", Parent: o.parent, Node: o.node, Created: o.created, Images: []repo.Image{{Name: oi.name}}}
	if v.Seal([]*chunk.Index{{Params: oi.params, Size: oi.size, Entries: b.out}}, o.meta) != nil {
		return repo.Digest{1}
	}
	return v.Digest
}

// outcome waits for the receiver's answer: the version committed, a want,
// or its error.
func (rp *rawPush) outcome(t *testing.T) (byte, error) {
	t.Helper()
	typ, p, err := rp.rd.read()
	if err != nil {
		return 0, err
	}
	if typ == msgError {
		return typ, decodeError(p)
	}
	return typ, nil
}

func zeros(n int, length int64) []op {
	es := make([]chunk.Entry, n)
	for i := range es {
		es[i] = chunk.Entry{Length: length, Zero: true}
	}
	return []op{{kind: opInsert, entries: es}}
}

func datas(n int, length int64) []op {
	es := make([]chunk.Entry, n)
	for i := range es {
		es[i] = chunk.Entry{Length: length, ID: chunk.ID{byte(i), byte(i >> 8), byte(i >> 16), 1}}
	}
	return []op{{kind: opInsert, entries: es}}
}

// TestReceiverLimits drives each limit past its bound and checks the
// receiver refuses with the condition that names it, while the same push
// within the bound goes on.
func TestReceiverLimits(t *testing.T) {
	cdc := chunk.DefaultCDC()
	tests := []struct {
		name   string
		limits Limits
		drive  func(t *testing.T, rp *rawPush)
		want   error // nil: the receiver takes the offer (asks for chunks, or commits)
	}{
		{"one-byte zero entries merge", Limits{MaxEntries: 4},
			func(t *testing.T, rp *rawPush) { rp.offerOps(t, 100000, cdc, zeros(100000, 1)) }, nil},
		{"entries per image", Limits{MaxEntries: 1000},
			func(t *testing.T, rp *rawPush) { rp.offerOps(t, 2000, cdc, datas(2000, 1)) }, ErrLimit},
		{"entries within the bound", Limits{MaxEntries: 1000},
			func(t *testing.T, rp *rawPush) { rp.offerOps(t, 999, cdc, datas(999, 1)) }, nil},
		{"ops bytes per offer", Limits{MaxOpsBytes: 10000},
			func(t *testing.T, rp *rawPush) { rp.offerOps(t, 600, cdc, datas(300, 1), datas(300, 1)) }, ErrLimit},
		// Stall bounds the test's own setup too: the receiver waits for the
		// offer from the hello on, while the test builds its 16,384 entries
		// (slow under -race on a loaded machine; 500 ms failed in CI).
		{"memory", Limits{Memory: 1 << 20, Stall: 3 * time.Second},
			func(t *testing.T, rp *rawPush) { rp.offerOps(t, 1<<14, cdc, datas(1<<14, 1)) }, ErrLimit},
		{"chunk size", Limits{MaxChunk: 32 << 10},
			func(t *testing.T, rp *rawPush) { rp.offerOps(t, 1, cdc, datas(1, 1)) }, ErrLimit},
		{"entries past the image", Limits{},
			func(t *testing.T, rp *rawPush) { rp.offerOps(t, 10, cdc, zeros(11, 1)) }, ErrMalformed},
		{"images per version", Limits{MaxImages: 1},
			func(t *testing.T, rp *rawPush) {
				rp.send(t, msgOffer, offer{digest: repo.Digest{1}, images: []offerImage{{name: "a", params: cdc}, {name: "b", params: cdc}}}.encode())
			}, ErrLimit},
		{"an image offered twice", Limits{},
			func(t *testing.T, rp *rawPush) {
				rp.send(t, msgOffer, offer{digest: repo.Digest{1}, images: []offerImage{{name: "a", params: cdc}, {name: "a", params: cdc}}}.encode())
			}, ErrMalformed},
		{"frame over the control stream's limit", Limits{},
			func(t *testing.T, rp *rawPush) {
				rp.st.Write(binaryFrameHeader(msgOffer, ctrlFrameLimit+1))
			}, ErrMalformed},
		{"a frame announced and never sent", Limits{Stall: 200 * time.Millisecond},
			func(t *testing.T, rp *rawPush) { rp.st.Write(binaryFrameHeader(msgOffer, 1<<20)) }, ErrStalled},
		{"silence after hello", Limits{Stall: 200 * time.Millisecond},
			func(t *testing.T, rp *rawPush) {}, ErrStalled},
		{"a third offer", Limits{},
			func(t *testing.T, rp *rawPush) {
				for range 3 {
					rp.send(t, msgOffer, offer{digest: repo.Digest{2}, base: repo.Digest{1}, images: nil}.encode())
					rp.send(t, msgOfferEnd, nil)
				}
			}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPeersWith(t, func(r *Receiver) { r.Limits = tt.limits })
			rp := p.rawPush(t, "vm")
			tt.drive(t, rp)
			typ, err := rp.outcome(t)
			if tt.want == nil {
				if err != nil || typ != msgWant && typ != msgCommitted {
					t.Fatalf("got frame %d, %v; want the receiver to take the offer", typ, err)
				}
				return
			}
			// A malformed frame also closes the connection, which may
			// overtake the error frame.
			if !errors.Is(err, tt.want) && !(errors.Is(tt.want, ErrMalformed) && errors.Is(err, transport.ErrProtocol)) {
				t.Fatalf("got frame %d, %v; want %v", typ, err, tt.want)
			}
			rp.c.Close()
			if rerr := <-p.errs; !errors.Is(rerr, tt.want) {
				t.Fatalf("the receiver ended with %v, want %v", rerr, tt.want)
			}
		})
	}
}

func binaryFrameHeader(typ byte, n uint64) []byte {
	var e enc
	e.uvarint(n)
	return append([]byte{typ}, e.b...)
}

// TestPushesPerPeer: a peer's pushes beyond the limit are refused while
// the first is in progress, and taken once it ended.
func TestPushesPerPeer(t *testing.T) {
	p := newPeersWith(t, func(r *Receiver) { r.Limits = Limits{PushesPerPeer: 1, Stall: time.Minute} })
	first := p.rawPush(t, "a")
	c, err := transport.Dial(t.Context(), p.addr, p.client, p.srvID, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	disk := randomData(rand.New(rand.NewPCG(1, 1)), 1<<20)
	if _, err := (&Sender{}).Push(t.Context(), c, imageVersion(t, "b", map[string][]byte{"disk": disk})); !errors.Is(err, ErrLimit) {
		t.Fatalf("a second push while one is in progress: %v, want ErrLimit", err)
	}
	c.Close()
	if err := <-p.errs; !errors.Is(err, ErrLimit) {
		t.Fatalf("receiver: %v", err)
	}
	first.c.CloseWithError(transport.ErrShuttingDown)
	<-p.errs
	if _, err := p.push(t, t.Context(), &Sender{}, imageVersion(t, "b", map[string][]byte{"disk": disk})); err != nil {
		t.Fatalf("a push after the first ended: %v", err)
	}
}

// TestStalledPushReleasesItsSet: a push that says hello and nothing more
// holds its set and keeps garbage collection away until the stall
// deadline, then lets go of both.
func TestStalledPushReleasesItsSet(t *testing.T) {
	p := newPeersWith(t, func(r *Receiver) { r.Limits = Limits{Stall: 300 * time.Millisecond} })
	rp := p.rawPush(t, "vm")
	// Another peer waits for the set (up to lockWait, 10 s): it gets it
	// once the stall deadline ended the push.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	unlock, err := p.repo.lock(ctx, "vm", "another peer", func() {})
	if err != nil {
		t.Fatalf("the set is still taken: %v", err)
	}
	unlock()
	rp.c.Close()
	if err := <-p.errs; !errors.Is(err, ErrStalled) {
		t.Fatalf("the stalled push ended with %v", err)
	}
	if end, ok := p.repo.gate.tryCollect(); !ok {
		t.Fatal("garbage collection is still kept away")
	} else {
		end()
	}
}

// TestZstdBombsAreRefused sends chunks whose zstd frames inflate past the
// chunk, declared or not, and one chunk twice.
func TestZstdBombsAreRefused(t *testing.T) {
	var streamed bytes.Buffer
	zw, _ := zstd.NewWriter(&streamed)
	zw.Write(make([]byte, 64<<20))
	zw.Close()
	enc, _ := zstd.NewWriter(nil)
	declared := enc.EncodeAll(make([]byte, 64<<20), nil)
	tests := []struct {
		name   string
		size   int64
		frames [][]byte
		want   error
	}{
		{"inflates, no size declared", 200, [][]byte{streamed.Bytes()}, ErrBadChunks},
		{"declares 64 MiB", 4096, [][]byte{declared}, ErrBadChunks},
		{"sent twice in a round", 4096, [][]byte{declared, declared}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPeersWith(t, func(r *Receiver) { r.Limits = Limits{Stall: 5 * time.Second} })
			rp := p.rawPush(t, "vm")
			rp.offerOps(t, tt.size, chunk.Pages(), []op{{kind: opInsert, entries: []chunk.Entry{{Length: tt.size, ID: chunk.Sum([]byte("x"))}}}})
			var err error
			for round := uint64(1); ; round++ {
				var typ byte
				if typ, err = rp.outcome(t); err != nil || typ != msgWant {
					break
				}
				rp.dataRound(t, round, func(w *frameWriter) {
					for _, f := range tt.frames {
						w.write(msgChunk, chunkMsg{ordinal: 0, codec: codecZstd, data: f}.appendTo(nil))
					}
				})
			}
			rp.assertRefused(t, p, err, tt.want)
		})
	}
}

// TestBigSparseImageFitsTheLimits: a 64 GiB sparse image with a few data
// extents is a handful of entries (the sender merges zero runs too), so a
// receiver with small limits takes it.
func TestBigSparseImageFitsTheLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 5))
	for _, off := range []int64{0, 17 << 30, 40<<30 + 12345, 64<<30 - 1<<20} {
		if _, err := f.WriteAt(randomData(r, 1<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	img, err := chunk.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	x, _, err := chunk.Build(t.Context(), img, chunk.DefaultCDC(), chunk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := newPeersWith(t, func(r *Receiver) { r.Limits = Limits{MaxEntries: 1000, Memory: 16 << 20} })
	v := &Version{Set: "vm", Images: []Image{{Name: "disk", Index: x, Source: ReaderSource{img}}}}
	res, err := p.push(t, t.Context(), &Sender{}, v)
	if err != nil {
		t.Fatalf("push of a 64 GiB sparse image in %d entries: %v", len(x.Entries), err)
	}
	if res.ImageBytes != 64<<30 {
		t.Fatalf("pushed %d bytes", res.ImageBytes)
	}
}

// TestRepoFilesArePrivate: everything a push writes is the owner's only.
func TestRepoFilesArePrivate(t *testing.T) {
	p := newPeers(t)
	disk := randomData(rand.New(rand.NewPCG(3, 3)), 1<<20)
	if _, err := p.push(t, t.Context(), &Sender{}, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(p.repo.Dir(), func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if path == p.repo.Dir() {
			return nil
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %#o, want %#o", path, fi.Mode().Perm(), want)
		}
		return nil
	})
}

// TestRepoRefusesLinksAndOversizedFiles: a repository's files are read
// only as regular files inside it, up to a size.
func TestRepoRefusesLinksAndOversizedFiles(t *testing.T) {
	p := newPeers(t)
	disk := randomData(rand.New(rand.NewPCG(4, 4)), 1<<20)
	if _, err := p.push(t, t.Context(), &Sender{}, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatal(err)
	}
	set := filepath.Join(p.repo.Dir(), "sets", "vm")
	if _, err := p.repo.Index("vm", 1, "disk"); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "disk.idx")
	os.Rename(filepath.Join(set, "versions", "000001", "disk.idx"), outside)
	os.Symlink(outside, filepath.Join(set, "versions", "000001", "disk.idx"))
	if _, err := p.repo.Index("vm", 1, "disk"); err == nil {
		t.Error("an index read through a symbolic link")
	}
	os.WriteFile(filepath.Join(set, "HEAD"), bytes.Repeat([]byte("1"), 1<<20), 0o600)
	if _, err := p.repo.Current("vm"); err == nil {
		t.Error("a 1 MiB HEAD was read")
	}
	os.WriteFile(filepath.Join(set, "versions", "000001", "version.json"), make([]byte, maxManifestFile+1), 0o600)
	if _, err := p.repo.Manifest("vm", 1); err == nil {
		t.Error("an oversized manifest was read")
	}
}

// TestFramesGrowAsTheyArrive: a frame that announces 16 MiB and brings 10
// bytes costs a buffer of what arrived, not of what was announced.
func TestFramesGrowAsTheyArrive(t *testing.T) {
	var b bytes.Buffer
	b.Write(binaryFrameHeader(msgOps, 16<<20))
	b.WriteString("0123456789")
	rd := newFrameReader(&b)
	if _, _, err := rd.read(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated frame: %v", err)
	}
	if cap(rd.buf) > frameStep {
		t.Fatalf("a 10-byte truncated frame grew the buffer to %d bytes", cap(rd.buf))
	}
	// Charged past frameKeep, and given back.
	mem := newBudget(Limits{Memory: 4 << 20, Stall: time.Second}.withDefaults())
	acct := mem.open(nil, nil)
	big := bytes.Repeat([]byte{1}, 3<<20)
	var w bytes.Buffer
	fw := newFrameWriter(&w)
	fw.write(msgOps, big)
	fw.flush()
	rd = newFrameReader(&w)
	rd.acct = acct
	if _, p, err := rd.read(); err != nil || !bytes.Equal(p, big) {
		t.Fatalf("read: %v", err)
	}
	if h := <-acct.held; h < 3<<20-frameKeep {
		t.Fatalf("a 3 MiB frame charged %d bytes", h)
	} else {
		acct.held <- h
	}
	rd.release()
	if h := <-acct.held; h != 0 {
		t.Fatalf("%d bytes still charged after release", h)
	}
}
