package sync

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// maxRounds bounds how often the receiver asks again for chunks that
// arrived damaged.
const maxRounds = 3

// Receiver serves pushes into a repository.
type Receiver struct {
	Repo *Repo
	// Logger, if set, is told about each push (info), each problem (warn,
	// error) and each round (debug); nil discards.
	Logger *slog.Logger
	// Served, if set, is called as each connection ServeListener accepted
	// is served, with what Serve returned (tests wait on it).
	Served func(err error)
	// Refused, if set, is told instead of Logger about each push or
	// connection that ended in an error, with the peer and its address
	// (a peer may cause many: rate limit what it prints).
	Refused func(peer transport.ID, addr net.Addr, err error)
	// Keep says which committed versions of a set are kept: after each
	// push the others are removed (never the current version, what its
	// image files need, nor the tip of a diverged copy), and once no push
	// is in progress the chunks no version refers to any more are dropped
	// from the store and their space given back. The zero Policy keeps
	// every version.
	Keep repo.Policy
	// Limits bound what each push and each peer may cost the receiver.
	Limits Limits
	// Resume, if set, starts the current version of a set as a running
	// copy when a peer asks at the end of a hand-off; it decides which
	// peers may ask. Nil: every such request is refused.
	Resume Resumer

	initOnce gosync.Once
	lim      Limits
	mem      *budget

	mu       gosync.Mutex
	sessions map[token]*session
	peers    map[transport.ID]*peerState
	// collectWanted says versions were removed since the last garbage
	// collection; collected that one ran since the receiver started.
	collectWanted, collected atomic.Bool
}

// session is a push in progress: data streams for it may arrive on its
// control connection or on data connections from the same peer.
type session struct {
	peer    transport.ID
	streams chan dataStream
	done    <-chan struct{} // the push ended
}

// peerState is what a peer's pushes in progress hold.
type peerState struct {
	pushes int
	mem    *semaphore.Weighted // nil: no memory bound
}

func (r *Receiver) init() {
	r.initOnce.Do(func() {
		r.lim = r.Limits.withDefaults()
		r.mem = newBudget(r.lim)
	})
}

// enter admits a push from peer and opens its memory account; leave ends
// both.
func (r *Receiver) enter(peer transport.ID, done <-chan struct{}) (acct *account, leave func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers == nil {
		r.peers = map[transport.ID]*peerState{}
	}
	ps := r.peers[peer]
	if ps == nil {
		ps = &peerState{}
		if r.lim.PeerMemory > 0 {
			ps.mem = semaphore.NewWeighted(r.lim.PeerMemory)
		}
		r.peers[peer] = ps
	}
	if ps.pushes >= r.lim.PushesPerPeer {
		return nil, nil, fmt.Errorf("%w: %d pushes from this peer are in progress already", ErrLimit, ps.pushes)
	}
	ps.pushes++
	acct = r.mem.open(ps.mem, done)
	return acct, func() {
		acct.close()
		r.mu.Lock()
		defer r.mu.Unlock()
		if ps.pushes--; ps.pushes == 0 {
			delete(r.peers, peer)
		}
	}, nil
}

// Per-stream buffers: the control stream's read and write buffers, and a
// data stream's read buffer (its payloads are read past it), each charged
// with the first frameKeep bytes of its frame buffer.
const (
	ctrlBufSize = 64 << 10
	dataBufSize = 4 << 10
)

// ctrlFrameLimit bounds a frame on the control stream: an offer's header
// with its metadata, or one ops frame (senders cut them at opsFrameSize).
const ctrlFrameLimit = 16 << 20

// dataStream is a data stream whose header has been read.
type dataStream struct {
	st    *transport.Stream
	rd    *frameReader
	round uint64
}

func (r *Receiver) register(peer transport.ID, done <-chan struct{}) (token, *session, func(), error) {
	var t token
	if _, err := rand.Read(t[:]); err != nil {
		return t, nil, nil, err
	}
	s := &session{peer: peer, streams: make(chan dataStream, maxStreams), done: done}
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
		rd = newFrameReaderSize(stallStream{st, r.lim.Stall}, dataBufSize)
	}
	rd.limit = 64
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
		case <-s.done:
			ds.st.Cancel(transport.ErrShuttingDown)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
		// The data connection lives as long as the push it serves.
		actx, stop := withDone(ctx, s.done)
		st, err = conn.AcceptStream(actx)
		stop()
		if err != nil {
			return nil // the sender closed its data connection, or the push ended
		}
	}
}

// withDone is ctx, also ended when done is closed.
func withDone(ctx context.Context, done <-chan struct{}) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (r *Receiver) refused(conn *transport.Conn, err error) {
	if r.Refused != nil {
		r.Refused(conn.PeerID(), conn.RemoteAddr(), err)
		return
	}
	r.log().Warn("push failed", "peer", conn.PeerID(), "addr", conn.RemoteAddr(), "err", err)
}

// log is r.Logger, or a logger that discards.
func (r *Receiver) log() *slog.Logger { return orDiscard(r.Logger) }

// Serve handles one connection: one push. Errors are reported to the peer
// as codes and returned; the caller goes on serving other connections.
func (r *Receiver) Serve(ctx context.Context, conn *transport.Conn) error {
	r.init()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	actx, acancel := context.WithTimeout(ctx, r.lim.Stall)
	ctrl, err := conn.AcceptStream(actx)
	acancel()
	if err != nil {
		if ctx.Err() == nil && actx.Err() != nil {
			err = fmt.Errorf("%w: no stream within %s", ErrStalled, r.lim.Stall)
		}
		err = fmt.Errorf("accept control stream: %w", err)
		r.refused(conn, err)
		return err
	}
	ss := stallStream{ctrl, r.lim.Stall}
	rd := newFrameReaderSize(ss, ctrlBufSize)
	rd.limit = ctrlFrameLimit
	defer rd.release()
	typ, err := rd.r.Peek(1)
	if err == nil && typ[0] == msgData {
		// A data connection of a push whose control stream is elsewhere.
		err := r.forward(ctx, conn, ctrl, rd)
		if err != nil {
			r.refused(conn, fmt.Errorf("data connection: %w", err))
			if errors.Is(err, ErrMalformed) {
				conn.CloseWithError(transport.ErrProtocol)
			}
		}
		return err
	}
	w := newFrameWriterSize(ss, ctrlBufSize)
	switch {
	case err == nil && typ[0] == msgResume:
		err = r.serveResume(ctx, cancel, conn, rd, w)
	case err == nil && typ[0] == msgStatus:
		err = r.serveStatus(rd, w)
	default:
		err = r.serve(ctx, cancel, conn, rd, w)
	}
	if err != nil {
		// Tell the peer what went wrong, by code.
		w.write(msgError, encodeUint(codeOf(err)))
		w.flush()
		r.refused(conn, err)
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
	if r.Keep.IsZero() || r.collected.Load() && !r.collectWanted.Load() {
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
		r.log().Error("collect garbage", "err", err)
	default:
		r.collected.Store(true)
		if st.ChunksDropped > 0 || st.PacksRemoved > 0 {
			r.log().Info("collected garbage", "took", time.Since(t0).Round(time.Millisecond), "chunks_dropped", st.ChunksDropped,
				"packs_removed", st.PacksRemoved, "packs_rewritten", st.PacksRewritten, "bytes_freed", st.BytesFreed)
		}
	}
}

// checkOffer refuses an offer the receiver will not take whatever its
// base: too many images, a name twice, chunks larger than it accepts.
func (r *Receiver) checkOffer(o offer) error {
	if len(o.images) > r.lim.MaxImages {
		return fmt.Errorf("%w: %d images in one version, limit %d", ErrLimit, len(o.images), r.lim.MaxImages)
	}
	seen := make(map[string]bool, len(o.images))
	for _, oi := range o.images {
		if err := CheckName(oi.name); err != nil {
			return err
		}
		if seen[oi.name] {
			return fmt.Errorf("%w: image %s offered twice", ErrMalformed, oi.name)
		}
		seen[oi.name] = true
		if int64(oi.params.MaxSize) > int64(r.lim.MaxChunk) {
			return fmt.Errorf("%w: image %s has chunks of up to %d bytes, limit %d", ErrLimit, oi.name, oi.params.MaxSize, r.lim.MaxChunk)
		}
	}
	return nil
}

// skipOffer reads past the ops of an offer that is not taken.
func skipOffer(rd *frameReader, maxBytes int64) error {
	var n int64
	for {
		typ, p, err := rd.read()
		if err != nil {
			return unexpected(err)
		}
		if n += int64(len(p)); n > maxBytes {
			return fmt.Errorf("%w: an offer's ops are over %d bytes", ErrLimit, maxBytes)
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
// image's index as they arrive, in image order.
func (r *Receiver) readOps(ctx context.Context, rd *frameReader, in *incoming, loadBase func(string) (*chunk.Index, error)) error {
	n := len(in.offer.images)
	builders := make([]*imageBuilder, 0, n)
	in.bases = make([]io.ReaderAt, n)
	seen := map[chunk.ID]struct{}{}
	var charged int
	// next starts the builder of the next image.
	next := func() error {
		i := len(builders)
		oi := in.offer.images[i]
		in.maxChunk = max(in.maxChunk, int64(oi.params.MaxSize))
		b := &imageBuilder{name: oi.name, size: oi.size, maxChunk: int64(oi.params.MaxSize), max: r.lim.MaxEntries, acct: in.acct}
		if oi.based {
			x, err := loadBase(oi.name)
			if err != nil {
				return err
			}
			if x.Params != oi.params {
				return fmt.Errorf("%w: image %s offered as based on an image cut otherwise", ErrMalformed, oi.name)
			}
			b.base = x.Entries
			in.bases[i] = chunk.NewStoreImage(ctx, x, r.Repo.store)
		}
		b.onInsert = func(e chunk.Entry, _ int) error {
			if _, ok := seen[e.ID]; ok {
				return nil
			}
			if len(in.news) >= charged {
				if err := in.acct.reserve(1024*newChunkCost, "the new chunks' list"); err != nil {
					return err
				}
				charged += 1024
			}
			seen[e.ID] = struct{}{}
			in.news = append(in.news, newChunk{image: i, entry: e})
			return nil
		}
		builders = append(builders, b)
		return nil
	}
	var opsBytes int64
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
		if opsBytes += int64(len(p)); opsBytes > r.lim.MaxOpsBytes {
			return fmt.Errorf("%w: an offer's ops are over %d bytes", ErrLimit, r.lim.MaxOpsBytes)
		}
		d := dec{b: p}
		img := d.uvarint()
		if d.err != nil {
			return d.err
		}
		if img >= uint64(n) || img+1 < uint64(len(builders)) {
			return fmt.Errorf("%w: ops for image %d of %d after image %d", ErrMalformed, img, n, len(builders)-1)
		}
		for uint64(len(builders)) <= img {
			if err := next(); err != nil {
				return err
			}
		}
		if err := decodeOpsTo(&d, builders[img]); err != nil {
			return err
		}
		if err := d.done(); err != nil {
			return err
		}
	}
	for len(builders) < n {
		if err := next(); err != nil {
			return err
		}
	}
	in.index = make([]*chunk.Index, n)
	for i, b := range builders {
		if err := b.finish(); err != nil {
			return err
		}
		oi := in.offer.images[i]
		x := &chunk.Index{Params: oi.params, Size: oi.size, Entries: b.out}
		if err := x.Check(); err != nil {
			return fmt.Errorf("%w: image %s: %w", ErrMalformed, oi.name, err)
		}
		in.index[i] = x
	}
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
	// Each wanted chunk is taken once a round: a chunk sent again is a
	// sender wasting the receiver's time.
	taken := make([]atomic.Bool, len(in.news))
	stall := time.NewTimer(r.lim.Stall)
	defer stall.Stop()
	for range s.streams {
		var ds dataStream
		select {
		case ds = <-sess.streams:
		case <-stall.C:
			g.Wait()
			return fmt.Errorf("%w: %d data streams announced, not opened within %s", ErrStalled, s.streams, r.lim.Stall)
		case <-gctx.Done():
			g.Wait()
			return fmt.Errorf("waiting for data streams: %w", context.Cause(gctx))
		}
		if ds.round != round {
			ds.st.Cancel(transport.ErrProtocol)
			g.Wait()
			return fmt.Errorf("%w: data stream of round %d during round %d", ErrMalformed, ds.round, round)
		}
		g.Go(func() error { return r.readData(gctx, ds, in, bitmap, have, taken, &damaged) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if n := damaged.Load(); n > 0 {
		r.log().Warn("refused damaged chunks; asking again", "round", round, "chunks", n)
	}
	return nil
}

// readData reads one data stream: chunks of the current round.
func (r *Receiver) readData(ctx context.Context, ds dataStream, in *incoming, bitmap []byte, have, taken []atomic.Bool, damaged *atomic.Int64) (err error) {
	s := ds.st
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
	d := &dataReader{r: r, in: in, rd: ds.rd, bitmap: bitmap, have: have, taken: taken, damaged: damaged}
	if err := d.open(); err != nil {
		return err
	}
	defer func() {
		if cerr := d.close(); err == nil {
			err = cerr
		}
	}()
	for {
		typ, p, err := d.rd.read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch typ {
		case msgChunk:
			err = d.chunk(ctx, p)
		case msgChunks:
			err = d.group(ctx, p)
		default:
			err = fmt.Errorf("%w: frame type %d on a data stream", ErrMalformed, typ)
		}
		if err != nil {
			return err
		}
	}
}

// A dataReader takes the chunks of one data stream through these phases:
//
//	take    the chunk was asked for this round, and not sent before
//	decode  its bytes from what came: raw, zstd, a patch of its base, or
//	        its share of a group compressed together
//	store   verified against its ID, then into the store and the staged
//	        images
//
// A chunk that fails decode or verify is damaged (counted, asked for
// again next round); a frame that breaks the protocol ends the push.
type dataReader struct {
	r           *Receiver
	in          *incoming
	rd          *frameReader
	bitmap      []byte
	have, taken []atomic.Bool
	damaged     *atomic.Int64

	dec     *zstd.Decoder
	sw      *stageWriter
	buf     []byte // decoded content, charged to in.acct
	bufHeld int64
}

// open charges the stream's buffers and readies its decoder and writer.
func (d *dataReader) open() error {
	in := d.in
	// A chunk frame holds at most a chunk, or a patch of one (its
	// segments and literal bytes), a group frame a group's compressed
	// content (smaller than the content, or the sender sends the chunks
	// alone) and its ordinals.
	d.rd.limit = int(max(2*in.maxChunk, maxGroupBytes+maxGroupChunks*binary.MaxVarintLen64) + 1024)
	d.rd.acct = in.acct
	if err := in.acct.reserve(dataBufSize+frameKeep, "a data stream"); err != nil {
		d.rd.release()
		return err
	}
	maxDecoded := max(in.maxChunk, maxGroupBytes)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(maxDecoded)), zstd.WithDecoderMaxWindow(uint64(maxDecoded)))
	if err != nil {
		in.acct.free(dataBufSize + frameKeep)
		d.rd.release()
		return err
	}
	d.dec = dec
	d.sw = &stageWriter{s: in.stage}
	return nil
}

// close writes what the stage writer gathered and gives back what open
// and grow charged.
func (d *dataReader) close() error {
	err := d.sw.flush()
	d.in.acct.free(d.bufHeld)
	d.dec.Close()
	d.in.acct.free(dataBufSize + frameKeep)
	d.rd.release()
	return err
}

// take checks that the chunk at ordinal was asked for this round and is
// sent once.
func (d *dataReader) take(ordinal uint64) (newChunk, error) {
	in := d.in
	if ordinal >= uint64(len(in.news)) || d.bitmap[ordinal/8]&(1<<(ordinal%8)) == 0 {
		return newChunk{}, fmt.Errorf("%w: chunk %d was not asked for", ErrMalformed, ordinal)
	}
	if d.taken[ordinal].Swap(true) {
		return newChunk{}, fmt.Errorf("%w: chunk %d sent twice in a round", ErrMalformed, ordinal)
	}
	return in.news[ordinal], nil
}

// grow returns the decode buffer, empty, with room for n bytes.
// Decompressed data goes to a buffer of the content's length, charged
// before it grows; the decoder refuses more.
func (d *dataReader) grow(n int64) ([]byte, error) {
	if need := n - int64(cap(d.buf)); need > 0 {
		if err := d.in.acct.reserve(need, "a decompressed chunk"); err != nil {
			return nil, err
		}
		d.bufHeld += need
		d.buf = make([]byte, 0, n)
	}
	return d.buf[:0], nil
}

// refuse counts n damaged chunks and says why.
func (d *dataReader) refuse(n int, msg string, args ...any) {
	d.r.log().Warn(msg, args...)
	d.damaged.Add(int64(n))
}

// chunk takes a frame of one chunk.
func (d *dataReader) chunk(ctx context.Context, p []byte) error {
	m, err := decodeChunk(p)
	if err != nil {
		return err
	}
	nc, err := d.take(m.ordinal)
	if err != nil {
		return err
	}
	data, ok, err := d.decode(m, nc)
	if err != nil || !ok {
		return err
	}
	var comp []byte
	if m.codec == codecZstd {
		comp = m.data
	}
	return d.store(ctx, m.ordinal, nc.entry.ID, data, comp, m.codec == codecRaw)
}

// decode returns a chunk's content from its frame; ok is false for a
// chunk refused as damaged.
func (d *dataReader) decode(m chunkMsg, nc newChunk) (data []byte, ok bool, err error) {
	if m.codec == codecRaw {
		return m.data, true, nil
	}
	buf, err := d.grow(nc.entry.Length)
	if err != nil {
		return nil, false, err
	}
	switch m.codec {
	case codecPatch:
		base := d.in.bases[nc.image]
		if base == nil {
			return nil, false, fmt.Errorf("%w: a patch for an image without a base", ErrMalformed)
		}
		data, err := applyPatch(m.data, nc.entry.Offset, nc.entry.Length, base, d.dec, buf)
		if err != nil {
			// A damaged base chunk of the store's is healed later
			// (heal.go); the chunk is asked for whole meanwhile.
			d.in.damaged.note(err)
			d.refuse(1, "refused chunk", "chunk", nc.entry.ID.Short(), "err", err)
			return nil, false, nil
		}
		return data, true, nil
	case codecZstd:
		if !zstdFits(m.data, nc.entry.Length) {
			d.refuse(1, "refused chunk: it does not declare its size", "chunk", nc.entry.ID.Short(), "bytes", nc.entry.Length)
			return nil, false, nil
		}
		out, err := d.dec.DecodeAll(m.data, buf)
		if err != nil || int64(len(out)) != nc.entry.Length {
			d.refuse(1, "refused chunk: it does not decompress to its size", "chunk", nc.entry.ID.Short(), "bytes", nc.entry.Length)
			return nil, false, nil
		}
		return out, true, nil
	}
	return m.data, true, nil
}

// group takes a group of chunks compressed together: each chunk is
// verified and stored alone (compressed again by the store), a group
// that does not decompress to its chunks' lengths is damaged as a whole.
func (d *dataReader) group(ctx context.Context, p []byte) error {
	m, err := decodeChunks(p)
	if err != nil {
		return err
	}
	ncs := make([]newChunk, len(m.ordinals))
	var total int64
	for i, o := range m.ordinals {
		if ncs[i], err = d.take(o); err != nil {
			return err
		}
		total += ncs[i].entry.Length
	}
	if total > maxGroupBytes {
		return fmt.Errorf("%w: a group of %d bytes of chunks", ErrMalformed, total)
	}
	if !zstdFits(m.data, total) {
		d.refuse(len(ncs), "refused group of chunks: it does not declare its size", "chunks", len(ncs), "bytes", total)
		return nil
	}
	buf, err := d.grow(total)
	if err != nil {
		return err
	}
	out, err := d.dec.DecodeAll(m.data, buf)
	if err != nil || int64(len(out)) != total {
		d.refuse(len(ncs), "refused group of chunks: it does not decompress to its size", "chunks", len(ncs), "bytes", total)
		return nil
	}
	for i, nc := range ncs {
		if err := d.store(ctx, m.ordinals[i], nc.entry.ID, out[:nc.entry.Length:nc.entry.Length], nil, false); err != nil {
			return err
		}
		out = out[nc.entry.Length:]
	}
	return nil
}

// store verifies a chunk and writes it to the store and the staged
// images; a chunk that does not match its ID is refused as damaged.
func (d *dataReader) store(ctx context.Context, ordinal uint64, id chunk.ID, data, comp []byte, raw bool) error {
	if err := chunk.Verify(id, data, "received from the sender"); err != nil {
		d.refuse(1, "refused chunk", "err", err)
		return nil
	}
	if err := d.r.Repo.store.PutVerified(ctx, id, data, comp, raw); err != nil {
		return err
	}
	if err := d.sw.put(id, data); err != nil {
		return err
	}
	d.have[ordinal].Store(true)
	return nil
}

// zstdFits reports whether a zstd frame declares exactly n bytes of
// content: what senders write (EncodeAll), and what lets the receiver
// refuse a bomb before decoding it.
func zstdFits(p []byte, n int64) bool {
	var h zstd.Header
	if err := h.Decode(p); err != nil {
		return false
	}
	if !h.HasFCS {
		return n < 256 // zstd leaves small sizes out of a frame header
	}
	return h.FrameContentSize == uint64(n)
}

// baseName names a push's base for the log.
func baseName(v *repo.Version) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprintf("v%d %s", v.Seq, v.Digest.Short())
}

// continuesOwn reports whether v, from peer, continues versions that peer
// made itself although v names no parent: a sender that knows no history
// of the set (its repository is new: an upgraded ntc, a lost state
// directory) pushing again what it pushed before. Such a version follows
// the current one when that one is the same node's: nothing else ran on
// the set since. Another node's current version is never replaced so.
func (r *Receiver) continuesOwn(ctx context.Context, set string, v *repo.Version, peer transport.ID) bool {
	if !v.Parent.IsZero() || v.Node != peer.String() {
		return false
	}
	head, err := r.Repo.nodes.Head(ctx, set)
	return err == nil && head != nil && head.Node == v.Node
}

// collectEvery is how often ServeListener collects garbage between pushes
// (pushes also collect as they end, when no other is under way).
const collectEvery = 10 * time.Second

// ServeListener accepts connections on l and serves each (Serve) until ctx
// ends or l fails, like http.Server.Serve. With Keep set it also collects
// garbage every few seconds: pushes that always overlap would otherwise
// put it off for good. It returns nil once ctx ended, after every
// connection it served has ended, else l's error.
func (r *Receiver) ServeListener(ctx context.Context, l *transport.Listener) error {
	var wg gosync.WaitGroup
	defer wg.Wait()
	if !r.Keep.IsZero() {
		wg.Go(func() {
			t := time.NewTicker(collectEvery)
			defer t.Stop()
			for {
				r.CollectIfWanted(ctx)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	for {
		c, err := l.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() {
			defer c.Close()
			err := r.Serve(ctx, c)
			if r.Served != nil {
				r.Served(err)
			}
		})
	}
}
