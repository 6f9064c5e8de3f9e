package sync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/transport"
)

// Sender pushes versions and remembers, per peer and set, what the peer
// acknowledged, so that the next push is a delta against it.
type Sender struct {
	// StateDir holds what the sender remembers: the indexes of acknowledged
	// versions, by digest, and per peer and set the acknowledged version.
	StateDir string
	// Streams is the number of parallel data streams (default 4).
	Streams int
	// BytesPerSec caps the chunk data rate; 0 means no cap.
	BytesPerSec int64
	// Conns is the number of connections that carry data (default 1, the
	// control connection). Each QUIC connection has its own congestion
	// window, and quic-go's NewReno backs off at every random loss: on a
	// lossy long link several connections together fill it where one
	// cannot. Dial makes the extra ones.
	Conns int
	Dial  func(ctx context.Context) (*transport.Conn, error)
	// Progress, if set, is called with the chunk bytes (uncompressed) as
	// they are sent, from several goroutines.
	Progress func(n int64)
	// Log, if set, is told what happens.
	Log func(format string, args ...any)

	mu      gosync.Mutex
	indexes map[chunk.ID]*chunk.Index // read from the cache, by digest

	// connsFrom replaces extraConnsFrom when set.
	connsFrom int64

	// unverified skips checking chunks asked for again, so that a test can
	// keep damaged ones on the wire.
	unverified bool
}

// Result says what a push did.
type Result struct {
	Set     string `json:"name"`
	Version uint64 `json:"version"`
	// ImageBytes is the total size of the version's images.
	ImageBytes int64 `json:"image_bytes"`
	// ChangedBytes is the size of the entries that differ from the
	// receiver's previous version.
	ChangedBytes int64 `json:"changed_bytes"`
	// NewChunks counts the distinct chunks offered that the receiver's
	// previous version did not have; ChunksSent those it asked for.
	NewChunks  int   `json:"new_chunks"`
	ChunksSent int   `json:"chunks_sent"`
	ChunkBytes int64 `json:"chunk_bytes"`
	// DataBytes is the compressed chunk data sent.
	DataBytes int64 `json:"data_bytes"`
	Rounds    int   `json:"rounds"`
	// Patched counts chunks sent as patches against the receiver's copy.
	Patched int `json:"chunks_patched"`
	// IndexFetched is set when the sender had to fetch the base indexes.
	IndexFetched bool  `json:"index_fetched"`
	DurationMS   int64 `json:"duration_ms"`
	// Connections is how many connections carried the push; BytesUp and
	// BytesDown what crossed the wire on all of them (QUIC packets,
	// retransmissions included), BytesLost what QUIC declared lost.
	Connections int    `json:"connections"`
	BytesUp     uint64 `json:"bytes_up"`
	BytesDown   uint64 `json:"bytes_down"`
	BytesLost   uint64 `json:"bytes_lost"`
}

func (s *Sender) logf(format string, args ...any) {
	if s.Log != nil {
		s.Log(format, args...)
	}
}

// ackState is what the sender remembers of a peer's copy of a set.
type ackState struct {
	Version uint64     `json:"version"`
	Images  []ackImage `json:"images"`
}

type ackImage struct {
	Name   string   `json:"name"`
	Digest chunk.ID `json:"digest"`
}

func (s *Sender) ackPath(peer transport.ID, set string) string {
	return filepath.Join(s.StateDir, "peers", peer.String(), set+".json")
}

func (s *Sender) cachedIndexPath(d chunk.ID) string {
	return filepath.Join(s.StateDir, "indexes", d.String()+".idx")
}

// cachedIndex returns the index with digest d if the sender keeps it.
func (s *Sender) cachedIndex(d chunk.ID) *chunk.Index {
	if s.StateDir == "" {
		return nil
	}
	s.mu.Lock()
	x, ok := s.indexes[d]
	s.mu.Unlock()
	if ok {
		return x
	}
	b, err := os.ReadFile(s.cachedIndexPath(d))
	if err != nil || chunk.ID(blake3.Sum256(b)) != d {
		return nil
	}
	if x, err = chunk.DecodeIndex(bytes.NewReader(b)); err != nil {
		return nil
	}
	s.mu.Lock()
	if s.indexes == nil {
		s.indexes = map[chunk.ID]*chunk.Index{}
	}
	s.indexes[d] = x
	s.mu.Unlock()
	return x
}

// LastAcked returns the version of set that peer last acknowledged to this
// sender, and its indexes by image name (nil if unknown).
func (s *Sender) LastAcked(peer transport.ID, set string) (uint64, map[string]*chunk.Index) {
	b, err := os.ReadFile(s.ackPath(peer, set))
	if err != nil {
		return 0, nil
	}
	var st ackState
	if json.Unmarshal(b, &st) != nil {
		return 0, nil
	}
	out := map[string]*chunk.Index{}
	for _, im := range st.Images {
		if x := s.cachedIndex(im.Digest); x != nil {
			out[im.Name] = x
		}
	}
	return st.Version, out
}

// keepIndexes stores the version's indexes in the sender's cache by
// digest (those not there yet), so that the next push can offer a delta
// against them once the receiver acknowledged this one. It runs while the
// chunks travel.
func (s *Sender) keepIndexes(v *Version) ([]chunk.ID, error) {
	digests := make([]chunk.ID, len(v.Images))
	if s.StateDir != "" {
		if err := os.MkdirAll(filepath.Join(s.StateDir, "indexes"), 0o700); err != nil {
			return nil, err
		}
	}
	for i, im := range v.Images {
		d, enc, err := indexDigest(im.Index)
		if err != nil {
			return nil, err
		}
		digests[i] = d
		if s.StateDir == "" {
			continue
		}
		p := s.cachedIndexPath(d)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			if err := atomicfile.WriteBytes(p, 0o600, enc); err != nil {
				return nil, err
			}
		}
	}
	return digests, nil
}

// remember records that peer acknowledged version of set, whose images'
// indexes keepIndexes stored under digests.
func (s *Sender) remember(peer transport.ID, set string, version uint64, v *Version, digests []chunk.ID) error {
	if s.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.ackPath(peer, set)), 0o700); err != nil {
		return err
	}
	st := ackState{Version: version}
	for i, im := range v.Images {
		st.Images = append(st.Images, ackImage{Name: im.Name, Digest: digests[i]})
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	return atomicfile.WriteBytes(s.ackPath(peer, set), 0o600, b)
}

// Push sends version v over conn and returns when the receiver committed it.
func (s *Sender) Push(ctx context.Context, conn *transport.Conn, v *Version) (*Result, error) {
	start := time.Now()
	if err := v.check(); err != nil {
		return nil, err
	}
	res := &Result{Set: v.Set}
	ctrl, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	defer ctrl.Close()
	// Closing the stream unblocks reads when ctx ends.
	stop := context.AfterFunc(ctx, func() { ctrl.Cancel(transport.ErrShuttingDown) })
	defer stop()
	w := newFrameWriter(ctrl)
	rd := newFrameReader(ctrl)
	if err := w.write(msgHello, hello{version: protocolVersion, set: v.Set}.encode()); err != nil {
		return nil, ctxErr(ctx, err)
	}
	// Offer at once against the version the receiver last acknowledged to
	// this sender (or against nothing): when the receiver still holds it,
	// as it usually does, the offer costs no round trip of its own.
	assumed, assumedIdx := s.lastBase(conn.PeerID(), v)
	pre := prepareOffer(v, assumed, assumedIdx)
	if err := pre.send(w); err != nil {
		return nil, ctxErr(ctx, err)
	}
	// The indexes go to the sender's cache while the offer travels.
	kept := make(chan struct{})
	var digests []chunk.ID
	var keepErr error
	go func() {
		defer close(kept)
		digests, keepErr = s.keepIndexes(v)
	}()
	defer func() { <-kept }()
	// Data connections' handshakes overlap the offer's round trip when
	// enough chunks will probably travel.
	var extra *dialing
	defer func() { extra.close() }()
	if newBytes(listNew(pre.ops, pre.results)) >= s.extraFrom() {
		extra = s.startDial(ctx)
	}
	p, err := rd.expect(msgBase)
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("handshake: %w", err))
	}
	b, err := decodeBase(p)
	if err != nil {
		return nil, err
	}
	if !pre.matches(b) {
		// The receiver ignores that offer: offer again against what it
		// holds, with base indexes from the cache or fetched once.
		baseOf := map[string]*chunk.Index{}
		for _, ref := range b.images {
			if !hasImage(v, ref.name) {
				continue
			}
			x := s.cachedIndex(ref.digest)
			if x == nil {
				if x, err = fetchIndex(ctx, w, rd, ref); err != nil {
					return nil, err
				}
				res.IndexFetched = true
			}
			baseOf[ref.name] = x
		}
		pre = prepareOffer(v, b, baseOf)
		if err := pre.send(w); err != nil {
			return nil, ctxErr(ctx, err)
		}
	}
	o, allOps, results := pre.offer, pre.ops, pre.results
	res.ImageBytes, res.ChangedBytes = pre.imageBytes, pre.changedBytes

	// Patches need the receiver to hold exactly the version the changed
	// ranges are relative to.
	patchable := make([][]chunk.Range, len(v.Images))
	for i, im := range v.Images {
		if im.Base == nil || im.Changed == nil || !o.images[i].based {
			continue
		}
		if d, _, err := indexDigest(im.Base); err == nil && d == o.images[i].baseDigest && im.Base.Params == im.Index.Params {
			patchable[i] = chunk.NormalizeRanges(im.Changed, max(im.Index.Size, im.Base.Size))
		}
	}
	news := listNew(allOps, results)
	res.NewChunks = len(news)
	s.logf("offered %s v%d: %d images, %d new chunks", v.Set, o.version, len(v.Images), len(news))

	conns := []*transport.Conn{conn}
	if newBytes(news) >= s.extraFrom() {
		if extra == nil {
			extra = s.startDial(ctx)
		}
		more, err := extra.wait()
		if err != nil {
			return nil, err
		}
		conns = append(conns, more...)
	}
	lim := newLimiter(s.BytesPerSec, func() uint64 {
		var n uint64
		for _, c := range conns {
			n += c.QUIC().ConnectionStats().BytesSent
		}
		return n
	})
	for {
		typ, p, err := rd.read()
		if err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("waiting for the receiver: %w", unexpected(err)))
		}
		switch typ {
		case msgError:
			return nil, decodeError(p)
		case msgCommitted:
			ver, err := decodeUint(p)
			if err != nil {
				return nil, err
			}
			if ver != o.version {
				return nil, fmt.Errorf("%w: committed version %d, offered %d", ErrMalformed, ver, o.version)
			}
			res.Version = ver
			<-kept
			if keepErr != nil {
				return nil, fmt.Errorf("pushed, but could not record it locally: %w", keepErr)
			}
			if err := s.remember(conn.PeerID(), v.Set, ver, v, digests); err != nil {
				return nil, fmt.Errorf("pushed, but could not record it locally: %w", err)
			}
			res.DurationMS = time.Since(start).Milliseconds()
			res.Connections = len(conns)
			for _, c := range conns {
				st := c.QUIC().ConnectionStats()
				res.BytesUp += st.BytesSent
				res.BytesDown += st.BytesReceived
				res.BytesLost += st.BytesLost
			}
			return res, nil
		case msgWant:
			wt, err := decodeWant(p)
			if err != nil {
				return nil, err
			}
			if len(wt.bitmap) != (len(news)+7)/8 {
				return nil, fmt.Errorf("%w: want bitmap of %d bytes for %d chunks", ErrMalformed, len(wt.bitmap), len(news))
			}
			res.Rounds++
			if wt.round > 1 {
				patchable = make([][]chunk.Range, len(v.Images)) // whole chunks when asked again
			}
			if err := s.sendRound(ctx, conns, b.session, w, v, news, wt, lim, patchable, res); err != nil {
				var se sourceError
				if errors.As(err, &se) {
					return nil, se.err // this side's failure: the receiver only saw the push end
				}
				if ctx.Err() == nil {
					// The receiver may have stopped the round: its reason
					// is on the control stream.
					if rerr := readPeerError(ctrl, rd); rerr != nil {
						return nil, rerr
					}
				}
				return nil, ctxErr(ctx, err)
			}
		default:
			return nil, fmt.Errorf("%w: unexpected frame type %d", ErrMalformed, typ)
		}
	}
}

// prepared is an offer ready to send.
type prepared struct {
	offer        offer
	ops          [][]op
	results      [][]chunk.Entry
	imageBytes   int64
	changedBytes int64
}

// prepareOffer expresses v as edits of the base images in baseOf (by name)
// of version b.
func prepareOffer(v *Version, b base, baseOf map[string]*chunk.Index) *prepared {
	p := &prepared{offer: offer{version: b.version + 1, base: b.version, meta: v.Meta}}
	p.ops = make([][]op, len(v.Images))
	p.results = make([][]chunk.Entry, len(v.Images))
	for i, im := range v.Images {
		oi := offerImage{name: im.Name, size: im.Index.Size, params: im.Index.Params}
		var baseEntries []chunk.Entry
		if bx, ok := baseOf[im.Name]; ok && bx.Params == im.Index.Params {
			for _, ref := range b.images {
				if ref.name == im.Name {
					oi.based, oi.baseDigest, baseEntries = true, ref.digest, bx.Entries
				}
			}
		}
		p.offer.images = append(p.offer.images, oi)
		p.ops[i] = makeDelta(baseEntries, im.Index.Entries)
		p.results[i] = im.Index.Entries
		p.imageBytes += im.Index.Size
		for _, op := range p.ops[i] {
			for _, e := range op.entries {
				p.changedBytes += e.Length
			}
		}
	}
	return p
}

// matches reports whether the receiver, holding b, takes the offer: the
// rule the receiver applies too (see Receiver.serve).
func (p *prepared) matches(b base) bool {
	return offerMatches(p.offer, b)
}

func offerMatches(o offer, b base) bool {
	if o.base != b.version {
		return false
	}
	for _, oi := range o.images {
		if !oi.based {
			continue
		}
		found := false
		for _, ref := range b.images {
			if ref.name == oi.name && ref.digest == oi.baseDigest {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// send writes the offer: header, ops frames, end.
func (p *prepared) send(w *frameWriter) error {
	if err := w.write(msgOffer, p.offer.encode()); err != nil {
		return err
	}
	for i, ops := range p.ops {
		for len(ops) > 0 {
			n := opsThatFit(ops, maxFrame/2)
			if err := w.write(msgOps, opsMsg{image: i, ops: ops[:n]}.encode()); err != nil {
				return err
			}
			ops = ops[n:]
		}
	}
	if err := w.write(msgOfferEnd, nil); err != nil {
		return err
	}
	return w.flush()
}

// lastBase is what the sender believes the receiver holds: the version it
// last acknowledged, with the indexes the sender keeps of it; nothing when
// it knows of none.
func (s *Sender) lastBase(peer transport.ID, v *Version) (base, map[string]*chunk.Index) {
	b, err := os.ReadFile(s.ackPath(peer, v.Set))
	if err != nil {
		return base{}, nil
	}
	var st ackState
	if json.Unmarshal(b, &st) != nil {
		return base{}, nil
	}
	out := base{version: st.Version}
	idx := map[string]*chunk.Index{}
	for _, im := range st.Images {
		out.images = append(out.images, imageRef{name: im.Name, digest: im.Digest})
		if x := s.cachedIndex(im.Digest); x != nil {
			idx[im.Name] = x
		}
	}
	return out, idx
}

// fetchIndex asks the receiver for the index of one of its images.
func fetchIndex(ctx context.Context, w *frameWriter, rd *frameReader, ref imageRef) (*chunk.Index, error) {
	if err := w.write(msgNeedIndex, encodeName(ref.name)); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := w.flush(); err != nil {
		return nil, ctxErr(ctx, err)
	}
	p, err := rd.expect(msgIndex)
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("fetch base index of %s: %w", ref.name, err))
	}
	name, enc, err := decodeIndexMsg(p)
	if err != nil {
		return nil, err
	}
	if name != ref.name {
		return nil, fmt.Errorf("%w: asked for index %s, got %s", ErrMalformed, ref.name, name)
	}
	x := &chunk.Index{}
	if err := x.UnmarshalBinary(enc); err != nil {
		return nil, fmt.Errorf("base index of %s: %w", ref.name, err)
	}
	if d, _, err := indexDigest(x); err != nil || d != ref.digest {
		return nil, fmt.Errorf("%w: base index of %s does not match its digest", ErrMalformed, ref.name)
	}
	return x, nil
}

// dialExtra opens n more connections to the receiver, in parallel.
// extraConnsFrom is how many bytes of new chunks make extra data
// connections worth their handshakes: below it, fresh connections' initial
// windows only overflow a slow link's queue together.
const extraConnsFrom = 8 << 20

func (s *Sender) extraFrom() int64 {
	if s.connsFrom > 0 {
		return s.connsFrom
	}
	return extraConnsFrom
}

// newBytes is the size of the new chunks.
func newBytes(news []newChunk) int64 {
	var n int64
	for _, nc := range news {
		n += nc.entry.Length
	}
	return n
}

// dialing is the opening of a push's extra data connections.
type dialing struct {
	done  chan struct{}
	conns []*transport.Conn
	err   error
}

// startDial starts opening the extra data connections (Conns-1 of them).
// It returns nil when there are none to open.
func (s *Sender) startDial(ctx context.Context) *dialing {
	n := s.Conns - 1
	if n <= 0 || s.Dial == nil {
		return nil
	}
	d := &dialing{done: make(chan struct{})}
	go func() {
		defer close(d.done)
		out := make([]*transport.Conn, n)
		g, gctx := errgroup.WithContext(ctx)
		for i := range n {
			g.Go(func() error {
				c, err := s.Dial(gctx)
				if err != nil {
					return fmt.Errorf("open data connection: %w", err)
				}
				out[i] = c
				return nil
			})
		}
		d.err = g.Wait()
		for _, c := range out {
			if c != nil {
				d.conns = append(d.conns, c)
			}
		}
	}()
	return d
}

// wait returns the opened connections (none for a nil d).
func (d *dialing) wait() ([]*transport.Conn, error) {
	if d == nil {
		return nil, nil
	}
	<-d.done
	return d.conns, d.err
}

// close closes the connections, once they are open.
func (d *dialing) close() {
	if d == nil {
		return
	}
	<-d.done
	for _, c := range d.conns {
		c.Close()
	}
}

// readPeerError waits briefly for an error frame on the control stream.
func readPeerError(ctrl *transport.Stream, rd *frameReader) error {
	ctrl.SetReadDeadline(time.Now().Add(3 * time.Second))
	defer ctrl.SetReadDeadline(time.Time{})
	typ, p, err := rd.read()
	if err != nil || typ != msgError {
		return nil
	}
	return decodeError(p)
}

func hasImage(v *Version, name string) bool {
	for _, im := range v.Images {
		if im.Name == name {
			return true
		}
	}
	return false
}

// opsThatFit returns how many ops from the start fit in about limit bytes.
func opsThatFit(ops []op, limit int) int {
	size := 0
	for i, o := range ops {
		size += 4 + len(o.entries)*42
		if size > limit && i > 0 {
			return i
		}
	}
	return len(ops)
}

// sendRound sends the wanted chunks over parallel data streams.
func (s *Sender) sendRound(ctx context.Context, conns []*transport.Conn, session token, w *frameWriter, v *Version, news []newChunk, wt want, lim *limiter, patchable [][]chunk.Range, res *Result) error {
	var todo []int
	for i := range news {
		if wt.bitmap[i/8]&(1<<(i%8)) != 0 {
			todo = append(todo, i)
		}
	}
	streams := s.Streams
	if streams <= 0 {
		streams = 4
	}
	streams = max(1, min(max(streams, len(conns)), maxStreams, len(todo)))
	if err := w.write(msgSent, sent{round: wt.round, streams: uint64(streams)}.encode()); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	var next, sentChunks, sentBytes, dataBytes, patched atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for i := range streams {
		conn := conns[i%len(conns)]
		g.Go(func() error {
			st, err := conn.OpenStream(gctx)
			if err != nil {
				return fmt.Errorf("open data stream: %w", err)
			}
			stop := context.AfterFunc(gctx, func() { st.Cancel(transport.ErrShuttingDown) })
			defer stop()
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
			if err != nil {
				return err
			}
			defer enc.Close()
			fw := newFrameWriter(st)
			if err := fw.write(msgData, dataHeader{round: wt.round, session: session}.encode()); err != nil {
				return err
			}
			if err := fw.flush(); err != nil {
				return err
			}
			var head, comp, rbuf []byte
			var zs zstdSkipper
			for {
				k := int(next.Add(sendBatch) - sendBatch)
				if k >= len(todo) {
					break
				}
				batch := make([]newChunk, 0, sendBatch)
				for _, i := range todo[k:min(k+sendBatch, len(todo))] {
					batch = append(batch, news[i])
				}
				var total int64
				for _, nc := range batch {
					total += nc.entry.Length
				}
				if int64(cap(rbuf)) < total {
					rbuf = make([]byte, total)
				}
				buf := rbuf[:total]
				datas, err := readBatch(gctx, v, batch, &buf)
				if err != nil {
					return sourceError{err}
				}
				for j, nc := range batch {
					data := datas[j]
					// The receiver verifies every chunk; a chunk it refused
					// is asked for again, and checked here first then.
					if wt.round > 1 && !s.unverified {
						if err := chunk.Verify(nc.entry.ID, data, v.Images[nc.image].Name); err != nil {
							return sourceError{fmt.Errorf("the image changed since it was indexed (index it again): %w", err)}
						}
					}
					m := chunkMsg{ordinal: uint64(todo[k+j]), codec: codecRaw, data: data}
					segs, lit := patchSegments(nc.entry, patchable[nc.image])
					if patchable[nc.image] != nil && lit < nc.entry.Length-64 {
						m.codec, m.data = codecPatch, encodePatch(comp[:0], segs, data, enc)
						patched.Add(1)
					} else if zs.try() {
						comp = enc.EncodeAll(data, comp[:0])
						if zs.result(len(comp), len(data)) {
							m.codec, m.data = codecZstd, comp
						}
					}
					head = m.appendHead(head[:0])
					if err := lim.wait(gctx, len(head)+len(m.data)); err != nil {
						return err
					}
					if err := fw.write2(msgChunk, head, m.data); err != nil {
						return err
					}
					sentChunks.Add(1)
					sentBytes.Add(int64(len(data)))
					dataBytes.Add(int64(len(m.data)))
					if s.Progress != nil {
						s.Progress(int64(len(data)))
					}
				}
			}
			if err := fw.flush(); err != nil {
				return err
			}
			return st.Close()
		})
	}
	err := g.Wait()
	res.ChunksSent += int(sentChunks.Load())
	res.ChunkBytes += sentBytes.Load()
	res.DataBytes += dataBytes.Load()
	res.Patched += int(patched.Load())
	return err
}

// ctxErr prefers the context's error when it ended the operation.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return err
}

// sourceError is a failure to read or check the chunks to send.
type sourceError struct{ err error }

func (e sourceError) Error() string { return e.err.Error() }
func (e sourceError) Unwrap() error { return e.err }

// sendBatch is how many chunks a data stream takes at a time: consecutive
// chunks of an image are read in one go and reach the receiver together.
const sendBatch = 32

// spanReader is a Source that can read a run of consecutive chunks at once.
type spanReader interface {
	ReadSpan(ctx context.Context, p []byte, off int64) error
}

// readBatch reads the content of a batch of chunks, runs of consecutive
// chunks of one image in one read (into buf, reused) where the source
// allows. The chunks are valid until buf is used again.
func readBatch(ctx context.Context, v *Version, batch []newChunk, buf *[]byte) ([][]byte, error) {
	out := make([][]byte, len(batch))
	for i := 0; i < len(batch); {
		nc := batch[i]
		im := v.Images[nc.image]
		j := i + 1
		sr, ok := im.Source.(spanReader)
		if ok {
			for j < len(batch) && batch[j].image == nc.image && batch[j].entry.Offset == batch[j-1].entry.End() {
				j++
			}
		}
		if !ok || j == i+1 {
			data, err := im.Source.ReadChunk(ctx, nc.entry)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", im.Name, err)
			}
			out[i] = data
			i++
			continue
		}
		n := batch[j-1].entry.End() - nc.entry.Offset
		if int64(cap(*buf)) < n {
			*buf = make([]byte, n)
		}
		span := (*buf)[:n]
		*buf = (*buf)[n:]
		if err := sr.ReadSpan(ctx, span, nc.entry.Offset); err != nil {
			return nil, fmt.Errorf("image %s: %w", im.Name, err)
		}
		for k := i; k < j; k++ {
			off := batch[k].entry.Offset - nc.entry.Offset
			out[k] = span[off : off+batch[k].entry.Length : off+batch[k].entry.Length]
		}
		i = j
	}
	return out, nil
}

// zstdSkipper stops trying to compress data that does not compress (a
// disk's compressed files, encrypted data) for a while, so that such an
// image costs no compression time, while data that does compress always
// goes through zstd.
type zstdSkipper struct {
	skip, backoff int
}

// try reports whether to compress the next chunk.
func (z *zstdSkipper) try() bool {
	if z.skip > 0 {
		z.skip--
		return false
	}
	return true
}

// result records how a chunk compressed and reports whether the
// compressed form is worth sending.
func (z *zstdSkipper) result(comp, raw int) bool {
	if comp <= raw-raw/32 {
		z.backoff = 0
		return true
	}
	z.backoff = min(max(2*z.backoff, 1), 16)
	z.skip = z.backoff
	return comp < raw
}
