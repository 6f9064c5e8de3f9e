package sync

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/transport"
)

// maxRounds bounds how often the receiver asks again for chunks that
// arrived damaged.
const maxRounds = 3

// Receiver serves pushes into a repository.
type Receiver struct {
	Repo *Repo
	// Log, if set, is told about each push and each problem.
	Log func(format string, args ...any)
	// Keep, if not 0, is how many committed versions of a set are kept:
	// after each push the older ones are removed, and once no push is in
	// progress the chunks no version refers to any more are dropped from
	// the store and their space given back. 0 keeps every version.
	Keep int

	mu       gosync.Mutex
	sessions map[token]*session
	// collectWanted says versions were removed since the last garbage
	// collection; collected that one ran since the receiver started.
	collectWanted, collected atomic.Bool
}

// session is a push in progress: data streams for it may arrive on its
// control connection or on data connections from the same peer.
type session struct {
	peer    transport.ID
	streams chan dataStream
}

// dataStream is a data stream whose header has been read.
type dataStream struct {
	st    *transport.Stream
	rd    *frameReader
	round uint64
}

func (r *Receiver) register(peer transport.ID) (token, *session, func(), error) {
	var t token
	if _, err := rand.Read(t[:]); err != nil {
		return t, nil, nil, err
	}
	s := &session{peer: peer, streams: make(chan dataStream, maxStreams)}
	r.mu.Lock()
	if r.sessions == nil {
		r.sessions = map[token]*session{}
	}
	r.sessions[t] = s
	r.mu.Unlock()
	return t, s, func() {
		r.mu.Lock()
		delete(r.sessions, t)
		r.mu.Unlock()
	}, nil
}

// openData reads a data stream's header (with rd, if it already reads st)
// and finds its session.
func (r *Receiver) openData(st *transport.Stream, rd *frameReader, peer transport.ID) (*session, dataStream, error) {
	if rd == nil {
		rd = newFrameReader(st)
	}
	p, err := rd.expect(msgData)
	if err != nil {
		return nil, dataStream{}, err
	}
	h, err := decodeDataHeader(p)
	if err != nil {
		return nil, dataStream{}, err
	}
	r.mu.Lock()
	s := r.sessions[h.session]
	r.mu.Unlock()
	if s == nil || s.peer != peer {
		return nil, dataStream{}, fmt.Errorf("%w: data for an unknown push", ErrMalformed)
	}
	return s, dataStream{st: st, rd: rd, round: h.round}, nil
}

// forward hands every data stream of conn to its session, until conn ends.
func (r *Receiver) forward(ctx context.Context, conn *transport.Conn, first *transport.Stream, rd *frameReader) error {
	st := first
	for {
		s, ds, err := r.openData(st, rd, conn.PeerID())
		rd = nil
		if err != nil {
			st.Cancel(transport.ErrProtocol)
			return err
		}
		select {
		case s.streams <- ds:
		case <-ctx.Done():
			return ctx.Err()
		}
		if st, err = conn.AcceptStream(ctx); err != nil {
			return nil // the sender closed its data connection
		}
	}
}

func (r *Receiver) logf(format string, args ...any) {
	if r.Log != nil {
		r.Log(format, args...)
	}
}

// Serve handles one connection: one push. Errors are reported to the peer
// as codes and returned; the caller goes on serving other connections.
func (r *Receiver) Serve(ctx context.Context, conn *transport.Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctrl, err := conn.AcceptStream(ctx)
	if err != nil {
		return fmt.Errorf("accept control stream: %w", err)
	}
	rd := newFrameReader(ctrl)
	typ, err := rd.r.Peek(1)
	if err == nil && typ[0] == msgData {
		// A data connection of a push whose control stream is elsewhere.
		return r.forward(ctx, conn, ctrl, rd)
	}
	w := newFrameWriter(ctrl)
	err = r.serve(ctx, cancel, conn, rd, w)
	if err != nil {
		// Tell the peer what went wrong, by code.
		w.write(msgError, encodeUint(codeOf(err)))
		w.flush()
		r.logf("push from %s: %v", conn.PeerID(), err)
	}
	ctrl.Close()
	r.CollectIfWanted(ctx)
	if errors.Is(err, ErrMalformed) {
		conn.CloseWithError(transport.ErrProtocol)
		return err
	}
	// The last frame (committed, or an error) must reach the sender before
	// the connection goes: wait for the sender to close it, briefly.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	select {
	case <-conn.Context().Done():
	case <-wctx.Done():
	}
	return err
}

// CollectIfWanted collects garbage if versions were removed since the
// last collection (or the receiver has not collected since it started,
// with Keep set) and no push is in progress; otherwise a later call does.
// Each push's end calls it; serve also calls it every few seconds, so that
// pushes that always overlap do not put it off for good.
func (r *Receiver) CollectIfWanted(ctx context.Context) {
	if r.Keep == 0 || r.collected.Load() && !r.collectWanted.Load() {
		return
	}
	t0 := time.Now()
	r.collectWanted.Store(false) // a prune from now on asks again
	st, ok, err := r.Repo.collect(ctx)
	switch {
	case !ok:
		r.collectWanted.Store(true)
	case err != nil:
		r.collectWanted.Store(true)
		r.logf("%v", err)
	default:
		r.collected.Store(true)
		if st.ChunksDropped > 0 || st.PacksRemoved > 0 {
			r.logf("collected garbage in %s: %d chunks dropped, %d packs removed (%d rewritten), %d bytes freed",
				time.Since(t0).Round(time.Millisecond), st.ChunksDropped, st.PacksRemoved, st.PacksRewritten, st.BytesFreed)
		}
	}
}

// incoming is the receiver's view of one offer.
type incoming struct {
	offer   offer
	ops     [][]op
	results [][]chunk.Entry
	index   []*chunk.Index
	bases   []io.ReaderAt // the base image, for based images (patches)
	news    []newChunk
	stage   *staging // images written as their chunks arrive
}

func (r *Receiver) serve(ctx context.Context, cancel context.CancelFunc, conn *transport.Conn, rd *frameReader, w *frameWriter) error {
	p, err := rd.expect(msgHello)
	if err != nil {
		return err
	}
	h, err := decodeHello(p)
	if err != nil {
		return err
	}
	if h.version != protocolVersion {
		return ErrVersionMismatch
	}
	if err := CheckName(h.set); err != nil {
		return err
	}
	// A garbage collection under way holds the gate until its Compact ends: wait
	// for it before taking the set, not while holding it.
	leave, err := r.Repo.gate.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	unlock, err := r.Repo.lock(ctx, h.set, conn.PeerID().String(), func() {
		cancel()
		conn.CloseWithError(transport.ErrShuttingDown)
	})
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := r.Repo.Current(h.set)
	if err != nil {
		return err
	}
	var b base
	tok, sess, unregister, err := r.register(conn.PeerID())
	if err != nil {
		return err
	}
	defer unregister()
	b.session = tok
	// Data streams opened on the control connection join the session too.
	go func() {
		for {
			st, err := conn.AcceptStream(ctx)
			if err != nil {
				return
			}
			s, ds, err := r.openData(st, nil, conn.PeerID())
			if err != nil || s != sess {
				st.Cancel(transport.ErrProtocol)
				continue
			}
			select {
			case sess.streams <- ds:
			case <-ctx.Done():
				return
			}
		}
	}()
	baseIdx := map[string]*chunk.Index{}
	if cur != nil {
		b.version = cur.Version
		for _, im := range cur.Images {
			b.images = append(b.images, imageRef{name: im.Name, digest: im.Digest})
		}
	}
	if err := w.write(msgBase, b.encode()); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	loadBase := func(name string) (*chunk.Index, error) {
		if x, ok := baseIdx[name]; ok {
			return x, nil
		}
		if cur == nil {
			return nil, ErrUnknownImage
		}
		for _, im := range cur.Images {
			if im.Name == name {
				x, err := r.Repo.Index(h.set, cur.Version, name)
				if err != nil {
					return nil, err
				}
				baseIdx[name] = x
				return x, nil
			}
		}
		return nil, ErrUnknownImage
	}

	// Index requests and offers, until an offer against what this
	// receiver holds arrives; others were made against an older belief of
	// the sender's and are skipped.
	var in incoming
	for {
		typ, p, err := rd.read()
		if err != nil {
			return unexpected(err)
		}
		if typ == msgNeedIndex {
			name, err := decodeName(p)
			if err != nil {
				return err
			}
			x, err := loadBase(name)
			if err != nil {
				return err
			}
			enc, err := x.MarshalBinary()
			if err != nil {
				return err
			}
			if err := w.write(msgIndex, encodeIndexMsg(name, enc)); err != nil {
				return err
			}
			if err := w.flush(); err != nil {
				return err
			}
			continue
		}
		if typ == msgError {
			return decodeError(p)
		}
		if typ != msgOffer {
			return fmt.Errorf("%w: frame type %d before the offer", ErrMalformed, typ)
		}
		if in.offer, err = decodeOffer(p); err != nil {
			return err
		}
		if offerMatches(in.offer, b) {
			break
		}
		if err := skipOffer(rd); err != nil {
			return err
		}
	}
	if err := r.readOps(ctx, rd, &in, loadBase); err != nil {
		return err
	}
	r.logf("push of %s v%d from %s: %d images, %d new chunks offered", h.set, in.offer.version, conn.PeerID(), len(in.index), len(in.news))
	names := make([]string, len(in.offer.images))
	for i, oi := range in.offer.images {
		names[i] = oi.name
	}
	if in.stage, err = r.Repo.stage(h.set, names, in.index); err != nil {
		return err
	}
	defer in.stage.discard()

	// Rounds: ask for what is missing until nothing is.
	have := make([]atomic.Bool, len(in.news))
	for i, nc := range in.news {
		ok, err := r.Repo.store.Has(ctx, nc.entry.ID)
		if err != nil {
			return err
		}
		have[i].Store(ok)
	}
	for round := uint64(1); ; round++ {
		bitmap := make([]byte, (len(in.news)+7)/8)
		missing := 0
		for i := range in.news {
			if !have[i].Load() {
				bitmap[i/8] |= 1 << (i % 8)
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if round > maxRounds {
			return ErrBadChunks
		}
		if err := w.write(msgWant, want{round: round, bitmap: bitmap}.encode()); err != nil {
			return err
		}
		if err := w.flush(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := r.receiveRound(ctx, sess, rd, &in, round, bitmap, have); err != nil {
			return err
		}
		r.logf("round %d: received %d chunks in %s", round, missing, time.Since(t0).Round(time.Millisecond))
	}
	t0 := time.Now()
	var g errgroup.Group
	g.Go(func() error { return r.Repo.store.Sync(ctx) })
	g.Go(in.stage.sync)
	if err := g.Wait(); err != nil {
		return err
	}
	// A write that failed for another push (a full disk) drops the
	// records it carried, some of which may be this push's: commit only
	// if every chunk is still there.
	for _, nc := range in.news {
		if ok, err := r.Repo.store.Has(ctx, nc.entry.ID); err != nil || !ok {
			return fmt.Errorf("chunk %s was lost to a failed write of the store (see the errors before): push again", nc.entry.ID.Short())
		}
	}
	tSync := time.Since(t0)
	m := &Manifest{Set: h.set, Version: in.offer.version, Base: in.offer.base, Created: time.Now().UTC(), Sender: conn.PeerID().String()}
	for i, oi := range in.offer.images {
		d, _, err := indexDigest(in.index[i])
		if err != nil {
			return err
		}
		m.Images = append(m.Images, ImageManifest{Name: oi.name, Size: oi.size, Index: oi.name + ".idx", Digest: d,
			Params: oi.params.String(), Chunks: len(in.index[i].Entries)})
	}
	if err := r.Repo.commit(h.set, m, in.index, in.offer.meta); err != nil {
		return err
	}
	tCommit := time.Since(t0)
	if err := r.Repo.materialize(ctx, h.set, m.Version, in.stage); err != nil {
		return err
	}
	r.logf("committed %s v%d (store synced in %s, committed in %s, images written in %s)", h.set, m.Version,
		tSync.Round(time.Millisecond), (tCommit - tSync).Round(time.Millisecond), (time.Since(t0) - tCommit).Round(time.Millisecond))
	if err := w.write(msgCommitted, encodeUint(m.Version)); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if removed, err := r.Repo.prune(h.set, r.Keep); err != nil {
		r.logf("%v", err) // the push is committed all the same
	} else if len(removed) > 0 {
		r.logf("removed %s versions %v (keeping %d)", h.set, removed, r.Keep)
		r.collectWanted.Store(true)
	}
	return nil
}

// skipOffer reads past the ops of an offer that is not taken.
func skipOffer(rd *frameReader) error {
	for {
		typ, _, err := rd.read()
		if err != nil {
			return unexpected(err)
		}
		switch typ {
		case msgOfferEnd:
			return nil
		case msgOps:
		default:
			return fmt.Errorf("%w: frame type %d inside an offer", ErrMalformed, typ)
		}
	}
}

// readOps reads the ops frames up to the offer's end and rebuilds each
// image's index.
func (r *Receiver) readOps(ctx context.Context, rd *frameReader, in *incoming, loadBase func(string) (*chunk.Index, error)) error {
	n := len(in.offer.images)
	in.ops = make([][]op, n)
	for {
		typ, p, err := rd.read()
		if err != nil {
			return unexpected(err)
		}
		if typ == msgOfferEnd {
			break
		}
		if typ != msgOps {
			return fmt.Errorf("%w: frame type %d inside the offer", ErrMalformed, typ)
		}
		m, err := decodeOpsMsg(p)
		if err != nil {
			return err
		}
		if m.image >= n {
			return fmt.Errorf("%w: ops for image %d of %d", ErrMalformed, m.image, n)
		}
		in.ops[m.image] = append(in.ops[m.image], m.ops...)
	}
	in.results = make([][]chunk.Entry, n)
	in.index = make([]*chunk.Index, n)
	in.bases = make([]io.ReaderAt, n)
	for i, oi := range in.offer.images {
		if err := CheckName(oi.name); err != nil {
			return err
		}
		var baseEntries []chunk.Entry
		if oi.based {
			x, err := loadBase(oi.name)
			if err != nil {
				return err
			}
			baseEntries = x.Entries
			in.bases[i] = chunk.NewStoreImage(ctx, x, r.Repo.store)
		}
		es, err := applyDelta(baseEntries, in.ops[i])
		if err != nil {
			return fmt.Errorf("image %s: %w", oi.name, err)
		}
		x := &chunk.Index{Params: oi.params, Size: oi.size, Entries: es}
		if err := x.Check(); err != nil {
			return fmt.Errorf("%w: image %s: %w", ErrMalformed, oi.name, err)
		}
		in.results[i], in.index[i] = es, x
	}
	in.news = listNew(in.ops, in.results)
	return nil
}

// receiveRound reads the sender's announcement of the round (how many data
// streams it opens), then those streams, storing every chunk that verifies.
func (r *Receiver) receiveRound(ctx context.Context, sess *session, rd *frameReader, in *incoming, round uint64, bitmap []byte, have []atomic.Bool) error {
	p, err := rd.expect(msgSent)
	if err != nil {
		return err
	}
	s, err := decodeSent(p)
	if err != nil {
		return err
	}
	if s.round != round {
		return fmt.Errorf("%w: round %d announced during round %d", ErrMalformed, s.round, round)
	}
	g, gctx := errgroup.WithContext(ctx)
	var damaged atomic.Int64
	for range s.streams {
		var ds dataStream
		select {
		case ds = <-sess.streams:
		case <-gctx.Done():
			g.Wait()
			return fmt.Errorf("waiting for data streams: %w", context.Cause(gctx))
		}
		if ds.round != round {
			ds.st.Cancel(transport.ErrProtocol)
			g.Wait()
			return fmt.Errorf("%w: data stream of round %d during round %d", ErrMalformed, ds.round, round)
		}
		g.Go(func() error { return r.readData(gctx, ds, in, bitmap, have, &damaged) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if n := damaged.Load(); n > 0 {
		r.logf("round %d: refused %d damaged chunks; asking again", round, n)
	}
	return nil
}

// readData reads one data stream: chunks of the current round.
func (r *Receiver) readData(ctx context.Context, ds dataStream, in *incoming, bitmap []byte, have []atomic.Bool, damaged *atomic.Int64) (err error) {
	s, rd := ds.st, ds.rd
	// A stream on a data connection lives apart from the control one:
	// end it when the push ends.
	stop := context.AfterFunc(ctx, func() { s.Cancel(transport.ErrShuttingDown) })
	defer stop()
	defer func() {
		if err != nil {
			// Stop the sender's writes at once: the reason follows on
			// the control stream.
			s.Cancel(transport.ErrInternal)
		} else {
			s.Close()
		}
	}()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(128<<20))
	if err != nil {
		return err
	}
	defer dec.Close()
	sw := &stageWriter{s: in.stage}
	defer func() {
		if ferr := sw.flush(); err == nil {
			err = ferr
		}
	}()
	var buf []byte
	for {
		typ, p, err := rd.read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if typ != msgChunk {
			return fmt.Errorf("%w: frame type %d on a data stream", ErrMalformed, typ)
		}
		m, err := decodeChunk(p)
		if err != nil {
			return err
		}
		if m.ordinal >= uint64(len(in.news)) || bitmap[m.ordinal/8]&(1<<(m.ordinal%8)) == 0 {
			return fmt.Errorf("%w: chunk %d was not asked for", ErrMalformed, m.ordinal)
		}
		nc := in.news[m.ordinal]
		data := m.data
		if m.codec == codecPatch {
			base := in.bases[nc.image]
			if base == nil {
				return fmt.Errorf("%w: a patch for an image without a base", ErrMalformed)
			}
			if data, err = applyPatch(m.data, nc.entry.Offset, nc.entry.Length, base, dec); err != nil {
				r.logf("chunk %s: %v", nc.entry.ID.Short(), err)
				damaged.Add(1)
				continue
			}
		} else if m.codec == codecZstd {
			buf, err = dec.DecodeAll(m.data, buf[:0])
			if err != nil || int64(len(buf)) != nc.entry.Length {
				r.logf("chunk %s: does not decompress to its %d bytes", nc.entry.ID.Short(), nc.entry.Length)
				damaged.Add(1)
				continue
			}
			data = buf
		}
		if err := chunk.Verify(nc.entry.ID, data, "received from the sender"); err != nil {
			r.logf("refused %v", err)
			damaged.Add(1)
			continue
		}
		var comp []byte
		if m.codec == codecZstd {
			comp = m.data
		}
		if err := r.Repo.store.PutVerified(ctx, nc.entry.ID, data, comp, m.codec == codecRaw); err != nil {
			return err
		}
		if err := sw.put(nc.entry.ID, data); err != nil {
			return err
		}
		have[m.ordinal].Store(true)
	}
}
