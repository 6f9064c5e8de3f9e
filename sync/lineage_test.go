package sync

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// node is one side of a round trip: a receiver serving its repository on
// loopback, and a sender with its own repository (StateDir), both under
// the node's identity.
type node struct {
	id     *transport.Identity
	repo   *Repo
	addr   string
	sender *Sender
	log    logLines
}

func newNode(t *testing.T) *node {
	t.Helper()
	r, err := OpenRepo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	id := transporttest.Identity(t)
	n := &node{id: id, repo: r, sender: &Sender{StateDir: t.TempDir(), Node: id.ID().String()}}
	return n
}

// serve starts n's receiver, allowing peer.
func (n *node) serve(t *testing.T, peer *node) {
	t.Helper()
	l := transporttest.Listen(t, n.id, transport.AllowIDs(peer.id.ID()), transport.Config{})
	n.addr = l.Addr().String()
	rcv := &Receiver{Repo: n.repo, Logger: testLogger(t, &n.log)}
	serveAll(t, l, rcv, func(error) {})
}

// push sends v from n to peer and returns the result and the bytes that
// crossed the wire both ways, besides what QUIC sent again after a loss
// (loopback drops packets when the receiver falls behind on a busy machine:
// the link's cost, not the protocol's).
func (n *node) push(t *testing.T, peer *node, v *Version) (*Result, uint64, error) {
	t.Helper()
	c, err := transport.Dial(t.Context(), peer.addr, n.id, peer.id.ID(), transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := n.sender.Push(t.Context(), c, v)
	st := c.QUIC().ConnectionStats()
	return res, st.BytesSent + st.BytesReceived - st.BytesLost, err
}

// adopt records in n's sender repository the current version of set that
// n's receiver holds: what a node does when it runs a copy started from a
// version it received (its next version is that version's child).
func (n *node) adopt(t *testing.T, set string) *repo.Version {
	t.Helper()
	h, err := n.repo.Nodes().Head(set)
	if err != nil || h == nil {
		t.Fatalf("head of %s: %v", set, err)
	}
	copyVersion(t, n.repo.Nodes(), h, n.senderRepo(t))
	return h
}

func (n *node) senderRepo(t *testing.T) *repo.Repo {
	t.Helper()
	nr, err := repo.Open(n.sender.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	return nr
}

// copyVersion commits version v of from (its indexes and metadata) to to.
func copyVersion(t *testing.T, from *repo.Repo, v *repo.Version, to *repo.Repo) {
	t.Helper()
	var idx []*chunk.Index
	for _, im := range v.Images {
		x, err := from.Index(v.Set, v.Seq, im.Name)
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, x)
	}
	meta, err := from.Meta(v.Set, v.Seq)
	if err != nil {
		t.Fatal(err)
	}
	c := *v
	if _, err := to.Commit(t.Context(), &c, idx, meta, repo.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
}

// keepLocal stores version v of n's sender repository, with its chunks
// read from pv, in n's receiving repository: what a node's own checkpoint
// of the version leaves there.
func (n *node) keepLocal(t *testing.T, d repo.Digest, pv *Version) {
	t.Helper()
	sr := n.senderRepo(t)
	v, err := sr.ByDigest(pv.Set, d)
	if err != nil {
		t.Fatal(err)
	}
	release, err := n.repo.holdStore(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, im := range pv.Images {
		for _, e := range im.Index.Entries {
			if e.Zero {
				continue
			}
			b, err := im.Source.ReadChunk(t.Context(), e)
			if err != nil {
				t.Fatal(err)
			}
			if err := n.repo.store.Put(t.Context(), e.ID, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := n.repo.store.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	copyVersion(t, sr, v, n.repo.Nodes())
	if err := n.repo.Materialize(t.Context(), pv.Set, 1); err != nil {
		t.Fatal(err)
	}
}

// changeOnePercent rewrites 1% of data in 16 scattered runs and returns
// the bytes of the chunks of after that before lacks.
func changeOnePercent(t *testing.T, r *rand.Rand, data []byte) []byte {
	t.Helper()
	out := slices.Clone(data)
	run := len(data) / 100 / 16
	for i := range 16 {
		off := i*(len(data)/16) + r.IntN(len(data)/16-run)
		copy(out[off:off+run], randomData(r, run))
	}
	return out
}

func newChunkBytes(t *testing.T, before, after *Version) int64 {
	t.Helper()
	had := map[chunk.ID]bool{}
	for _, e := range before.Images[0].Index.Entries {
		had[e.ID] = true
	}
	var n int64
	for _, e := range after.Images[0].Index.Entries {
		if !e.Zero && !had[e.ID] {
			had[e.ID] = true
			n += e.Length
		}
	}
	return n
}

// TestRoundTripSendsOnlyTheChanges: A pushes v1 of a 64 MiB image to B; B
// runs on from v1 and pushes v2 (1% changed) back to A, which holds v1 as
// the version it made: only the changed chunks travel, and no index is
// fetched. Then A runs on from v2 and pushes v3 to B the same way.
func TestRoundTripSendsOnlyTheChanges(t *testing.T) {
	a, b := newNode(t), newNode(t)
	a.serve(t, b)
	b.serve(t, a)
	r := rand.New(rand.NewPCG(11, 11))
	const set = "vm"
	d1 := randomData(r, 64<<20)
	v1 := imageVersion(t, set, map[string][]byte{"disk": d1})
	res1, wire1, err := a.push(t, b, v1)
	if err != nil {
		t.Fatal(err)
	}
	a.keepLocal(t, res1.Digest, v1)
	assertMaterialized(t, b.repo, set, map[string][]byte{"disk": d1})

	// B runs the copy it received and pushes its next version back.
	if h := b.adopt(t, set); h.Digest != res1.Digest {
		t.Fatalf("B holds %s, A pushed %s", h.Digest.Short(), res1.Digest.Short())
	}
	d2 := changeOnePercent(t, r, d1)
	v2 := imageVersion(t, set, map[string][]byte{"disk": d2})
	changed := newChunkBytes(t, v1, v2)
	res2, wire2, err := b.push(t, a, v2)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Parent != res1.Digest || res2.Base != res1.Digest || res2.IndexFetched || res2.Head != res2.Digest {
		t.Fatalf("return leg: parent %s, base %s (v1 is %s), index fetched %v, head %s", res2.Parent.Short(), res2.Base.Short(),
			res1.Digest.Short(), res2.IndexFetched, res2.Head.Short())
	}
	if float64(wire2) > 1.2*float64(changed) {
		t.Fatalf("return leg: %d bytes on the wire for %d bytes of changed chunks (%.2fx)", wire2, changed, float64(wire2)/float64(changed))
	}
	assertMaterialized(t, a.repo, set, map[string][]byte{"disk": d2})
	if cur, err := a.repo.Current(set); err != nil || cur.Digest != res2.Digest || cur.Parent != res1.Digest || cur.Node != b.id.ID().String() {
		t.Fatalf("A's current version: %+v, %v", cur, err)
	}
	t.Logf("first leg %d bytes on the wire, return leg %d (%.4fx; changed chunks %d, up %d down %d, data %d)", wire1, wire2, float64(wire2)/float64(wire1), changed, res2.BytesUp, res2.BytesDown, res2.DataBytes)

	// A runs on from v2 and pushes v3 to B.
	a.adopt(t, set)
	d3 := changeOnePercent(t, r, d2)
	v3 := imageVersion(t, set, map[string][]byte{"disk": d3})
	res3, wire3, err := a.push(t, b, v3)
	if err != nil {
		t.Fatal(err)
	}
	// B holds v1 with its chunks, and its own v2 only as indexes: v1 is
	// the common base, and what changed since goes.
	if res3.Parent != res2.Digest || res3.Base != res1.Digest || res3.IndexFetched {
		t.Fatalf("third leg: parent %s, base %s, index fetched %v", res3.Parent.Short(), res3.Base.Short(), res3.IndexFetched)
	}
	if changed3 := newChunkBytes(t, v1, v3); float64(wire3) > 1.2*float64(changed3) {
		t.Fatalf("third leg: %d bytes on the wire for %d bytes of changed chunks", wire3, changed3)
	}
	assertMaterialized(t, b.repo, set, map[string][]byte{"disk": d3})
}

// TestDivergenceIsKeptNotCurrent: A and B both make a child of v1; A's is
// current at the receiver, B's push is stored but not made current, both
// sides say so, and Force makes it current.
func TestDivergenceIsKeptNotCurrent(t *testing.T) {
	a, b, home := newNode(t), newNode(t), newNode(t)
	home.serve(t, a)
	// The receiver allows both: serve it again for B on its own address.
	other := &node{id: home.id, repo: home.repo}
	other.serve(t, b)
	r := rand.New(rand.NewPCG(12, 12))
	const set = "vm"
	d1 := randomData(r, 1<<20)
	res1, _, err := a.push(t, home, imageVersion(t, set, map[string][]byte{"disk": d1}))
	if err != nil {
		t.Fatal(err)
	}
	copyVersion(t, home.repo.Nodes(), mustHead(t, home.repo, set), b.senderRepo(t)) // B runs a copy of v1

	da := changeOnePercent(t, r, d1)
	resA, _, err := a.push(t, home, imageVersion(t, set, map[string][]byte{"disk": da}))
	if err != nil || resA.Parent != res1.Digest {
		t.Fatalf("A's child of v1: %v, %+v", err, resA)
	}
	db := changeOnePercent(t, r, d1)
	resB, _, err := b.push(t, other, imageVersion(t, set, map[string][]byte{"disk": db}))
	if !errors.Is(err, repo.ErrDiverged) || resB == nil || !resB.Diverged || resB.Head != resA.Digest {
		t.Fatalf("B's child of v1: %v, %+v; want it kept but not current", err, resB)
	}
	if !other.log.has("stored but not current") {
		t.Error("the receiver did not log the divergence")
	}
	assertMaterialized(t, home.repo, set, map[string][]byte{"disk": da})
	div, err := home.repo.Nodes().Diverged(set)
	if err != nil || len(div) != 1 || div[0].Digest != resB.Digest {
		t.Fatalf("diverged: %v, %v; want B's version", div, err)
	}
	sets, _ := home.repo.List()
	if len(sets) != 1 || sets[0].Current.Digest != resA.Digest || !slices.Equal(sets[0].Diverged, []uint64{div[0].Seq}) {
		t.Fatalf("list: %+v", sets)
	}

	// B insists: its version becomes current, A's is the other tip.
	b.sender.Force = true
	resF, _, err := b.push(t, other, imageVersion(t, set, map[string][]byte{"disk": db}))
	if err != nil || resF.Digest != resB.Digest || resF.Head != resB.Digest || resF.ChunksSent != 0 {
		t.Fatalf("forced push: %v, %+v", err, resF)
	}
	assertMaterialized(t, home.repo, set, map[string][]byte{"disk": db})
	if div, err := home.repo.Nodes().Diverged(set); err != nil || len(div) != 1 || div[0].Digest != resA.Digest {
		t.Fatalf("after force, diverged: %v, %v; want A's version", div, err)
	}
}

func mustHead(t *testing.T, r *Repo, set string) *repo.Version {
	t.Helper()
	h, err := r.Nodes().Head(set)
	if err != nil || h == nil {
		t.Fatalf("head of %s: %v", set, err)
	}
	return h
}

// TestClaimedDigestMustMatch: an offer whose digest is not that of what
// arrived is refused before any chunk is asked for, and nothing commits.
func TestClaimedDigestMustMatch(t *testing.T) {
	p := newPeers(t)
	rp := p.rawPush(t, "vm")
	o := offer{images: []offerImage{{name: "img", size: 4096, params: chunk.Pages()}}, node: "someone"}
	ops := [][]op{datas(1, 4096)}
	o.digest = rawDigest(o, ops)
	o.node = "someone else" // the header changed after the digest was taken
	rp.offerRaw(t, o, ops...)
	if _, err := rp.outcome(t); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("got %v, want %v", err, ErrDigestMismatch)
	}
	rp.c.Close()
	if err := <-p.errs; !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("the receiver ended with %v", err)
	}
	if cur, err := p.repo.Current("vm"); err != nil || cur != nil {
		t.Fatalf("current after a refused offer: %+v, %v", cur, err)
	}
}

// writeOldLayout writes, by hand, a receiver repository as ntc wrote it
// before node repositories: versions 3 and 5 of set vm (1 and 2, 4 pruned),
// CURRENT naming 5, and the image files holding 5.
func writeOldLayout(t *testing.T, dir string) (map[uint64]*chunk.Index, time.Time) {
	t.Helper()
	created := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	idx := map[uint64]*chunk.Index{}
	r := rand.New(rand.NewPCG(13, 13))
	for _, n := range []uint64{3, 5} {
		vd := filepath.Join(dir, "sets", "vm", fmt.Sprintf("v%06d", n))
		if err := os.MkdirAll(vd, 0o700); err != nil {
			t.Fatal(err)
		}
		x, _, err := chunk.Build(t.Context(), chunk.Bytes(randomData(r, 256<<10)), chunk.DefaultCDC(), chunk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		idx[n] = x
		if err := chunk.WriteIndexFile(filepath.Join(vd, "disk.idx"), x); err != nil {
			t.Fatal(err)
		}
		d, _, _ := indexDigest(x)
		m := map[string]any{"set": "vm", "version": n, "base": n - 1, "created": created.Add(time.Duration(n) * time.Minute),
			"sender": "OLDSENDER", "images": []map[string]any{{"name": "disk", "size": x.Size, "index": "disk.idx", "digest": d, "chunks": len(x.Entries)}}}
		b, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(vd, "manifest.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vd, "meta"), []byte(fmt.Sprintf(`{"n":%d}`, n)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "sets", "vm", "CURRENT"), []byte("v000005\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sets", "vm", "images"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sets", "vm", "images", ".state.json"), []byte(`{"version":5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return idx, created
}

// TestOldLayoutIsConverted: a repository in the older layout is converted
// when opened, keeping its numbers, its current version and what its image
// files hold; a conversion cut short by a crash is finished by the next
// open, with the same digests.
func TestOldLayoutIsConverted(t *testing.T) {
	check := func(t *testing.T, dir string, idx map[uint64]*chunk.Index, created time.Time) []*repo.Version {
		t.Helper()
		r, err := OpenRepo(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		vs, err := r.Nodes().Versions("vm")
		if err != nil || len(vs) != 2 || vs[0].Seq != 3 || vs[1].Seq != 5 {
			t.Fatalf("converted versions: %v, %v", vs, err)
		}
		if !vs[0].Parent.IsZero() || vs[1].Parent != vs[0].Digest || vs[1].Node != "OLDSENDER" || !vs[1].Created.Equal(created.Add(5*time.Minute)) {
			t.Fatalf("converted lineage: %+v %+v", vs[0], vs[1])
		}
		cur, err := r.Current("vm")
		if err != nil || cur == nil || cur.Version != 5 || cur.Base != 3 || cur.Sender != "OLDSENDER" {
			t.Fatalf("current: %+v, %v", cur, err)
		}
		for n, want := range idx {
			if x, err := r.Index("vm", n, "disk"); err != nil || !slices.Equal(x.Entries, want.Entries) {
				t.Fatalf("index of v%d: %v", n, err)
			}
			if m, err := r.Meta("vm", n); err != nil || string(m) != fmt.Sprintf(`{"n":%d}`, n) {
				t.Fatalf("meta of v%d: %q, %v", n, m, err)
			}
		}
		if r.materializedVersion("vm") != 5 {
			t.Fatal("the image files' state was lost")
		}
		old, _ := filepath.Glob(filepath.Join(dir, "sets", "vm", "v0*"))
		if _, err := os.Stat(filepath.Join(dir, "sets", "vm", "CURRENT")); err == nil || len(old) != 0 {
			t.Fatalf("the older layout is still there: %v", old)
		}
		return vs
	}
	dir := t.TempDir()
	idx, created := writeOldLayout(t, dir)
	clean := check(t, dir, idx, created)

	// A crash after both versions were committed and v000005 removed,
	// before v000003 and CURRENT went (and before HEAD was set).
	dir2 := t.TempDir()
	writeOldLayout(t, dir2)
	nodes, err := repo.Open(dir2)
	if err != nil {
		t.Fatal(err)
	}
	half := newDirRepo(dir2, nodes)
	var parent repo.Digest
	for _, n := range []uint64{3, 5} {
		v, x, meta, err := half.readOldVersion("vm", n, parent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nodes.Commit(t.Context(), v, x, meta, repo.CommitOptions{Seq: n}); err != nil {
			t.Fatal(err)
		}
		parent = v.Digest
	}
	if err := nodes.SetHead(t.Context(), "vm", 3); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir2, "sets", "vm", "v000005")); err != nil {
		t.Fatal(err)
	}
	again := check(t, dir2, idx, created)
	for i := range clean {
		if clean[i].Digest != again[i].Digest {
			t.Fatalf("version %d: %s after a crash, %s without", clean[i].Seq, again[i].Digest.Short(), clean[i].Digest.Short())
		}
	}
}

// TestPolicyThinsVersions: a receiver's policy keeps the newest and one a
// day, never the current version nor a diverged tip.
func TestPolicyThinsVersions(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var parent repo.Digest
	commit := func(created time.Time, p repo.Digest) *repo.Version {
		t.Helper()
		x := &chunk.Index{Params: chunk.Pages(), Size: 4096, Entries: []chunk.Entry{{Length: 4096, Zero: true}}}
		v := &repo.Version{Set: "vm", Parent: p, Node: "n", Created: created, Images: []repo.Image{{Name: "disk"}}}
		if err := v.Seal([]*chunk.Index{x}, nil); err != nil {
			t.Fatal(err)
		}
		c, err := r.Nodes().Commit(t.Context(), v, []*chunk.Index{x}, nil, repo.CommitOptions{})
		if err != nil && !errors.Is(err, repo.ErrDiverged) {
			t.Fatal(err)
		}
		return c.Version
	}
	// Three days, three versions a day, in one line.
	var line []*repo.Version
	for d := range 3 {
		for h := range 3 {
			v := commit(day.Add(time.Duration(d)*24*time.Hour+time.Duration(h)*time.Hour), parent)
			parent = v.Digest
			line = append(line, v)
		}
	}
	// A copy that ran apart from the first version, long ago.
	tip := commit(day.Add(time.Hour/2), line[0].Digest)
	removed, err := r.prune(t.Context(), "vm", repo.Policy{Last: 2, Daily: 3})
	if err != nil {
		t.Fatal(err)
	}
	seqs, _ := r.Nodes().Seqs("vm")
	// Kept: the newest two (8, 9), the newest of each day (3, 6, 9), the
	// diverged tip (10), and 1, the tip's ancestor is not protected.
	want := []uint64{3, 6, 8, 9, tip.Seq}
	if !slices.Equal(seqs, want) {
		t.Fatalf("kept %v (removed %v), want %v", seqs, removed, want)
	}
}

// TestOlderPeerGetsVersionError: a sender of protocol 1 is refused with the
// version error, the same condition as transport's (which the command line
// tells to upgrade ntc on both sides).
func TestOlderPeerGetsVersionError(t *testing.T) {
	p := newPeers(t)
	c, err := transport.Dial(t.Context(), p.addr, p.client, p.srvID, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w, rd := newFrameWriter(st), newFrameReader(st)
	if err := w.write(msgHello, hello{version: 1, set: "vm"}.encode()); err != nil {
		t.Fatal(err)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	typ, payload, err := rd.read()
	if err != nil || typ != msgError {
		t.Fatalf("answer to a protocol 1 hello: frame %d, %v", typ, err)
	}
	err = decodeError(payload)
	if !errors.Is(err, ErrVersionMismatch) || !errors.Is(err, transport.ErrVersionMismatch) {
		t.Fatalf("got %v, want %v matching transport.ErrVersionMismatch", err, ErrVersionMismatch)
	}
}

// TestSenderWithoutHistoryContinuesItsOwn: a sender that lost its
// repository (or an ntc upgraded from before lineage) pushes the set again:
// its version names no parent, yet it follows the current version the same
// node made, so it becomes current; another node's is still a divergence.
func TestSenderWithoutHistoryContinuesItsOwn(t *testing.T) {
	a, b, home := newNode(t), newNode(t), newNode(t)
	home.serve(t, a)
	other := &node{id: home.id, repo: home.repo}
	other.serve(t, b)
	r := rand.New(rand.NewPCG(31, 31))
	const set = "vm"
	d1 := randomData(r, 1<<20)
	if _, _, err := a.push(t, home, imageVersion(t, set, map[string][]byte{"disk": d1})); err != nil {
		t.Fatal(err)
	}
	a.sender = &Sender{StateDir: t.TempDir(), Node: a.id.ID().String()} // A's state is gone
	d2 := changeOnePercent(t, r, d1)
	res, _, err := a.push(t, home, imageVersion(t, set, map[string][]byte{"disk": d2}))
	if err != nil || res.Diverged || res.Head != res.Digest {
		t.Fatalf("A again, without its history: %v, %+v; want it current", err, res)
	}
	assertMaterialized(t, home.repo, set, map[string][]byte{"disk": d2})
	_, _, err = b.push(t, other, imageVersion(t, set, map[string][]byte{"disk": changeOnePercent(t, r, d1)}))
	if !errors.Is(err, repo.ErrDiverged) {
		t.Fatalf("B, another node without history: %v; want a divergence", err)
	}
	assertMaterialized(t, home.repo, set, map[string][]byte{"disk": d2})
}
