package sync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// A push, as the receiver serves it, goes through these phases (serve):
//
//	handshake  hello and candidates: which set, which versions the sender holds
//	admit      the peer's share of memory, the store, the set's lock
//	base       the newest version both hold, named to the sender with a session
//	offer      index requests, then the offer taken against that base and its ops
//	seal       the version's identity, computed from what arrived
//	fetch      rounds of wants until every new chunk is stored
//	commit     the store made durable, the version committed and materialized

// incoming is the receiver's view of one offer.
type incoming struct {
	offer    offer
	index    []*chunk.Index
	bases    []io.ReaderAt // the base image, for based images (patches)
	news     []newChunk
	stage    *staging // images written as their chunks arrive
	acct     *account
	maxChunk int64 // the largest chunk the offer's parameters allow
	// damaged are the stored chunks found damaged while reading them
	// (patch bases, image files being written): see heal.go.
	damaged damagedSet
}

// push is one push being served on a control stream.
type push struct {
	r    *Receiver
	conn *transport.Conn
	rd   *frameReader
	w    *frameWriter
	set  string
	// version is the sender's protocol version.
	version uint64
	cands   candidates
	cur     *repo.Version // the common base, nil when there is none
	b       base
	sess    *session
	in      incoming
	baseIx  map[string]*chunk.Index
	// round is the last round of wants; heldAtStart says, by new chunk,
	// whether the store held it when the push began (the others arrive
	// in it); healed counts the chunks asked for again (heal.go).
	round       uint64
	heldAtStart []bool
	healed      int
}

func (r *Receiver) serve(ctx context.Context, cancel context.CancelFunc, conn *transport.Conn, rd *frameReader, w *frameWriter) error {
	p := &push{r: r, conn: conn, rd: rd, w: w}
	if err := p.handshake(); err != nil {
		return err
	}
	leave, err := p.admit(ctx, cancel)
	if err != nil {
		return err
	}
	defer leave()
	unregister, err := p.sendBase(ctx)
	if err != nil {
		return err
	}
	defer unregister()
	if err := p.readOffer(); err != nil {
		return err
	}
	if err := r.readOps(ctx, rd, &p.in, p.loadBase); err != nil {
		return err
	}
	v, err := p.seal()
	if err != nil {
		return err
	}
	if err := p.stage(); err != nil {
		return err
	}
	defer p.in.stage.discard()
	if err := p.fetch(ctx); err != nil {
		return err
	}
	if err := p.healHeld(ctx); err != nil {
		return err
	}
	return p.commit(ctx, v)
}

// handshake reads the sender's hello and candidate versions.
func (p *push) handshake() error {
	b, err := p.rd.expect(msgHello)
	if err != nil {
		return err
	}
	h, err := decodeHello(b)
	if err != nil {
		return err
	}
	if h.version < minProtocolVersion || h.version > protocolVersion {
		return ErrVersionMismatch
	}
	if err := CheckName(h.set); err != nil {
		return err
	}
	p.set, p.version = h.set, h.version
	if b, err = p.rd.expect(msgCandidate); err != nil {
		return err
	}
	p.cands, err = decodeCandidates(b)
	return err
}

// admit takes what the push holds until it ends: its peer's share of the
// receiver's memory, the repository's gate and store, the set's lock.
// leave gives them back in the reverse order.
func (p *push) admit(ctx context.Context, cancel context.CancelFunc) (_ func(), err error) {
	var undo []func()
	leave := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			leave()
		}
	}()
	peer := p.conn.PeerID()
	acct, leavePeer, err := p.r.enter(peer, ctx.Done())
	if err != nil {
		return nil, err
	}
	undo = append(undo, leavePeer, p.rd.release) // the reader's buffer before the account closes
	if err := acct.reserve(2*(ctrlBufSize+frameKeep), "the control stream"); err != nil {
		return nil, err
	}
	p.rd.acct = acct
	p.in.acct = acct
	// A garbage collection under way holds the gate until its Compact ends: wait
	// for it before taking the set, not while holding it.
	leaveGate, err := p.r.Repo.gate.enter(ctx)
	if err != nil {
		return nil, err
	}
	undo = append(undo, leaveGate)
	release, err := p.r.Repo.holdStore(ctx)
	if err != nil {
		return nil, err
	}
	undo = append(undo, release)
	unlock, err := p.r.Repo.lock(ctx, p.set, peer.String(), func() {
		cancel()
		p.conn.CloseWithError(transport.ErrShuttingDown)
	})
	if err != nil {
		return nil, err
	}
	undo = append(undo, unlock)
	return leave, nil
}

// sendBase finds the common base (the newest of the sender's versions this
// repository holds), opens the push's session for data streams and names
// both to the sender.
func (p *push) sendBase(ctx context.Context) (unregister func(), err error) {
	r := p.r
	if p.cur, err = r.Repo.nodes.Newest(ctx, p.set, p.cands.digests); err != nil {
		return nil, err
	}
	head, err := r.Repo.nodes.Head(ctx, p.set)
	if err != nil {
		return nil, err
	}
	if head != nil {
		p.b.head = head.Digest
	}
	tok, sess, unregister, err := r.register(p.conn.PeerID(), ctx.Done())
	if err != nil {
		return nil, err
	}
	p.b.session, p.sess = tok, sess
	go p.acceptData(ctx)
	p.baseIx = map[string]*chunk.Index{}
	if p.cur != nil {
		p.b.version, p.b.digest = p.cur.Seq, p.cur.Digest
		for _, im := range p.cur.Images {
			p.b.images = append(p.b.images, imageRef{name: im.Name, digest: chunk.ID(im.Index)})
		}
	}
	if err := p.w.write(msgBase, p.b.encode()); err != nil {
		unregister()
		return nil, err
	}
	if err := p.w.flush(); err != nil {
		unregister()
		return nil, err
	}
	return unregister, nil
}

// acceptData has data streams opened on the control connection join the
// session too, until the push ends.
func (p *push) acceptData(ctx context.Context) {
	for {
		st, err := p.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		s, ds, err := p.r.openData(st, nil, p.conn.PeerID())
		if err != nil || s != p.sess {
			st.Cancel(transport.ErrProtocol)
			continue
		}
		select {
		case p.sess.streams <- ds:
		case <-ctx.Done():
			return
		}
	}
}

// loadBase reads the index of the base's image name, once.
func (p *push) loadBase(name string) (*chunk.Index, error) {
	if x, ok := p.baseIx[name]; ok {
		return x, nil
	}
	if p.cur == nil {
		return nil, ErrUnknownImage
	}
	for _, im := range p.cur.Images {
		if im.Name == name {
			if err := p.in.acct.reserve(int64(im.Chunks)*entrySize, "the base index of "+name); err != nil {
				return nil, err
			}
			x, err := p.r.Repo.Index(p.set, p.cur.Seq, name)
			if err != nil {
				return nil, err
			}
			p.baseIx[name] = x
			return x, nil
		}
	}
	return nil, ErrUnknownImage
}

// readOffer answers index requests and reads offers until one against
// what this receiver holds arrives; others were made against an older
// belief of the sender's and are skipped. A sender asks for each index
// once and offers at most twice (before and after it learns the base).
func (p *push) readOffer() error {
	sentIndex := map[string]bool{}
	for offers := 0; ; {
		typ, b, err := p.rd.read()
		if err != nil {
			return unexpected(err)
		}
		switch typ {
		case msgNeedIndex:
			if err := p.sendIndex(b, sentIndex); err != nil {
				return err
			}
			continue
		case msgError:
			return decodeError(b)
		case msgOffer:
		default:
			return fmt.Errorf("%w: frame type %d before the offer", ErrMalformed, typ)
		}
		if offers++; offers > 2 {
			return fmt.Errorf("%w: a third offer", ErrMalformed)
		}
		if p.in.offer, err = decodeOffer(b); err != nil {
			return err
		}
		if err := p.r.checkOffer(p.in.offer); err != nil {
			return err
		}
		if offerMatches(p.in.offer, p.b) {
			return nil
		}
		if err := skipOffer(p.rd, p.r.lim.MaxOpsBytes); err != nil {
			return err
		}
	}
}

// sendIndex answers a request for a base image's index.
func (p *push) sendIndex(b []byte, sent map[string]bool) error {
	name, err := decodeName(b)
	if err != nil {
		return err
	}
	if sent[name] {
		return fmt.Errorf("%w: index of %s asked for twice", ErrMalformed, name)
	}
	sent[name] = true
	x, err := p.loadBase(name)
	if err != nil {
		return err
	}
	cost := int64(len(x.Entries)) * (int64(len(chunk.ID{})) + 4)
	if err := p.in.acct.reserve(cost, "the base index of "+name); err != nil {
		return err
	}
	enc, err := x.MarshalBinary()
	if err != nil {
		return err
	}
	if err := p.w.write(msgIndex, encodeIndexMsg(name, enc)); err != nil {
		return err
	}
	if err := p.w.flush(); err != nil {
		return err
	}
	p.in.acct.free(cost)
	return nil
}

// seal computes the version's identity from what arrived and checks it
// against the digest it was offered under.
func (p *push) seal() (*repo.Version, error) {
	in := &p.in
	v := &repo.Version{Set: p.set, Parent: in.offer.parent, Node: in.offer.node, Created: in.offer.created, From: p.conn.PeerID().String()}
	for _, oi := range in.offer.images {
		v.Images = append(v.Images, repo.Image{Name: oi.name})
	}
	if err := v.Seal(in.index, in.offer.meta); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if v.Digest != in.offer.digest {
		return nil, fmt.Errorf("%w: offered as %s, its content is %s", ErrDigestMismatch, in.offer.digest.Short(), v.Digest.Short())
	}
	p.r.log().Info("push offered", "set", p.set, "digest", v.Digest.Short(), "peer", p.conn.PeerID(), "base", baseName(p.cur), "images", len(in.index), "new_chunks", len(in.news))
	return v, nil
}

// stage prepares the image files written as their chunks arrive.
func (p *push) stage() error {
	names := make([]string, len(p.in.offer.images))
	for i, oi := range p.in.offer.images {
		names[i] = oi.name
	}
	var err error
	p.in.stage, err = p.r.Repo.stage(p.set, names, p.in.index)
	return err
}

// fetch asks for what is missing, round after round, until nothing is.
// The first call records what the store held before the push.
func (p *push) fetch(ctx context.Context) error {
	in := &p.in
	have := make([]atomic.Bool, len(in.news))
	for i, nc := range in.news {
		ok, err := p.r.Repo.store.Has(ctx, nc.entry.ID)
		if err != nil {
			return err
		}
		have[i].Store(ok)
	}
	if p.heldAtStart == nil {
		p.heldAtStart = make([]bool, len(in.news))
		for i := range have {
			p.heldAtStart[i] = have[i].Load()
		}
	}
	for first := p.round + 1; ; {
		bitmap := make([]byte, (len(in.news)+7)/8)
		missing := 0
		for i := range in.news {
			if !have[i].Load() {
				bitmap[i/8] |= 1 << (i % 8)
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		p.round++
		if p.round-first >= maxRounds {
			return ErrBadChunks
		}
		round := p.round
		if err := p.w.write(msgWant, want{round: round, bitmap: bitmap}.encode()); err != nil {
			return err
		}
		if err := p.w.flush(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := p.r.receiveRound(ctx, p.sess, p.rd, in, round, bitmap, have); err != nil {
			return err
		}
		p.r.log().Info("round received", "round", round, "chunks", missing, "took", time.Since(t0).Round(time.Millisecond))
	}
}

// syncStore makes the chunks and staged images durable, and checks that
// every chunk of the push is still in the store.
func (p *push) syncStore(ctx context.Context) error {
	var g errgroup.Group
	g.Go(func() error { return p.r.Repo.store.Sync(ctx) })
	g.Go(p.in.stage.sync)
	if err := g.Wait(); err != nil {
		return err
	}
	// A write that failed for another push (a full disk) drops the
	// records it carried, some of which may be this push's: commit only
	// if every chunk is still there.
	for _, nc := range p.in.news {
		if ok, err := p.r.Repo.store.Has(ctx, nc.entry.ID); err != nil || !ok {
			return fmt.Errorf("chunk %s was lost to a failed write of the store (see the errors before): push again", nc.entry.ID.Short())
		}
	}
	return nil
}

// commit makes the store durable, commits v, materializes it when it is
// current, tells the sender and removes the versions Keep does not keep.
func (p *push) commit(ctx context.Context, v *repo.Version) error {
	r, in, peer := p.r, &p.in, p.conn.PeerID()
	t0 := time.Now()
	if err := p.syncStore(ctx); err != nil {
		return err
	}
	tSync := time.Since(t0)
	force := p.cands.force || r.continuesOwn(ctx, p.set, v, peer)
	c, err := r.Repo.nodes.Commit(ctx, v, in.index, in.offer.meta, repo.CommitOptions{Force: force, Lineage: in.offer.links})
	diverged := errors.Is(err, repo.ErrDiverged)
	if err != nil && !diverged {
		return err
	}
	tCommit := time.Since(t0)
	if diverged {
		// Kept beside the current version, which stays as it is.
		r.log().Warn("version stored but not current: a forced push from the sender makes it current",
			"set", p.set, "version", c.Version.Seq, "digest", v.Digest.Short(), "peer", peer, "err", err)
	} else {
		if err := p.materialize(ctx, c.Head.Seq); err != nil {
			return err
		}
		if v.Node == peer.String() && len(in.offer.meta) > 0 {
			// The sender checkpointed this version: its machine runs there.
			if err := r.Repo.nodes.SetRunner(ctx, p.set, v.Node, v.Digest); err != nil {
				r.log().Warn("record who runs the set", "set", p.set, "err", err)
			}
		}
		r.log().Info("committed", "set", p.set, "version", c.Version.Seq, "digest", v.Digest.Short(),
			"store_synced_in", tSync.Round(time.Millisecond), "committed_in", (tCommit - tSync).Round(time.Millisecond),
			"images_written_in", (time.Since(t0) - tCommit).Round(time.Millisecond))
	}
	if err := p.w.write(msgCommitted, committed{version: c.Version.Seq, head: c.Head.Digest, diverged: diverged}.encode()); err != nil {
		return err
	}
	if err := p.w.flush(); err != nil {
		return err
	}
	if removed, err := r.Repo.prune(ctx, p.set, r.Keep); err != nil {
		r.log().Error("remove old versions", "set", p.set, "err", err) // the push is committed all the same
	} else if len(removed) > 0 {
		r.log().Info("removed versions", "set", p.set, "versions", removed, "keep", r.Keep)
		r.collectWanted.Store(true)
	}
	return nil
}
