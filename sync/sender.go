package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// Sender pushes versions. It keeps the versions it pushes in a node
// repository (index-only) with their lineage, and remembers per peer and
// set what the peer acknowledged, so that the next push is a delta against
// the newest version both hold.
type Sender struct {
	// StateDir is the sender's node repository (package repo) and what it
	// remembers of its peers. Empty: nothing is kept, and each version is
	// made a child of the receiver's current one.
	StateDir string
	// Node names this node in the versions it makes (its transport ID).
	Node string
	// Force asks the receiver to make the version current even when its
	// current version is not an ancestor (the copies diverged).
	Force bool
	// Streams is the number of parallel data streams (default 4); over
	// several connections they are shared out, at least one on each.
	Streams int
	// BytesPerSec caps the chunk data rate; 0 means no cap.
	BytesPerSec int64
	// Conns is the most connections that carry data (default 1, the
	// control connection): a push uses one per 10 ms of round trip, up to
	// Conns (dial.go), dialled with the offer when much will travel, or
	// during a round when the control connection shows random loss; data
	// starts on the control connection without waiting for them. Each
	// QUIC connection has its own congestion window, and quic-go's NewReno
	// backs off at every random loss: on a lossy long link several
	// connections together fill it where one cannot. Dial makes the extra
	// ones; one that fails to open leaves the push with fewer.
	Conns int
	Dial  func(ctx context.Context) (*transport.Conn, error)
	// Progress, if set, is called with the chunk bytes (uncompressed) as
	// they are sent, from several goroutines; Wanted, if set, with the
	// chunk bytes the receiver asks for, at the start of each round.
	Progress func(n int64)
	Wanted   func(n int64)
	// Logger, if set, is told what happens; nil discards.
	Logger *slog.Logger

	// connsFrom replaces extraConnsFrom when set; connsAnyRTT uses extra
	// connections whatever the round trip (tests run on loopback).
	connsFrom   int64
	connsAnyRTT bool

	// level, if set, fixes the compression level (an index into levels)
	// instead of choosing it from what the data streams measure; groups,
	// if set, decides whether chunks are grouped instead of the rule (a
	// long path, or a small round).
	level  *int
	groups *bool

	// unverified skips checking chunks asked for again, so that a test can
	// keep damaged ones on the wire.
	unverified bool
}

// Result says what a push did.
type Result struct {
	Set string `json:"name"`
	// Version is the version's number on the receiver, Digest its
	// identity on every node.
	Version uint64      `json:"version"`
	Digest  repo.Digest `json:"digest"`
	Parent  repo.Digest `json:"parent"`
	// Base is the version both sides held that the push was a delta
	// against (zero: none); Head the receiver's current version after it.
	Base repo.Digest `json:"base"`
	Head repo.Digest `json:"head"`
	// Diverged is set when the receiver kept the version without making
	// it current (Push then returns an error matching repo.ErrDiverged).
	Diverged bool `json:"diverged,omitempty"`
	// Images counts the version's images, ImageBytes is their total size.
	Images     int   `json:"images"`
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
	// Grouped counts chunks sent compressed together with others, in
	// Groups frames.
	Grouped int `json:"chunks_grouped,omitempty"`
	Groups  int `json:"groups,omitempty"`
	// Healed counts chunks the receiver asked for again because its
	// stored copy was damaged (they are in ChunksSent too).
	Healed int `json:"chunks_healed,omitempty"`
	// Compressed is how many chunk bytes were compressed at each zstd
	// level (its name), as the data streams chose them.
	Compressed map[string]int64 `json:"compressed,omitempty"`
	// IndexFetched is set when the sender had to fetch the base indexes.
	IndexFetched bool  `json:"index_fetched"`
	DurationMS   int64 `json:"duration_ms"`
	// Connections is how many connections the push opened (the control
	// connection and the extra data connections that opened); BytesUp and
	// BytesDown what crossed the wire on all of them (QUIC packets,
	// retransmissions included), BytesLost what QUIC declared lost.
	Connections int    `json:"connections"`
	BytesUp     uint64 `json:"bytes_up"`
	BytesDown   uint64 `json:"bytes_down"`
	BytesLost   uint64 `json:"bytes_lost"`
}

// log is s.Logger, or a logger that discards.
func (s *Sender) log() *slog.Logger { return orDiscard(s.Logger) }

// orDiscard is l, or a logger that discards when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// Push sends version v over conn and returns when the receiver committed
// it. v is first recorded in the sender's repository (see local). When the
// receiver keeps it without making it current, the Result says so and the
// error matches repo.ErrDiverged.
//
// A push goes through these phases: record (the version in the sender's
// repository), open (hello, candidates and, when the sender knows what the
// receiver holds, the offer at once), base (the receiver's answer, and the
// offer again against it when the first one missed), connect (data
// connections when enough will travel), then reply: rounds of wanted
// chunks until the receiver commits.
func (s *Sender) Push(ctx context.Context, conn *transport.Conn, v *Version) (*Result, error) {
	if err := v.check(); err != nil {
		return nil, err
	}
	p := &pushing{s: s, conn: conn, v: v.mergeZeroRuns(), start: time.Now()}
	p.res = &Result{Set: v.Set}
	if err := p.record(ctx); err != nil {
		return nil, err
	}
	if p.pruneAfter {
		defer s.prune(context.WithoutCancel(ctx), p.nr, v.Set)
	}
	ctrl, done, err := openControl(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer done()
	p.ctrl, p.w, p.rd = ctrl, newFrameWriter(ctrl), newFrameReader(ctrl)
	p.extra = s.newDialing()
	defer p.extra.close()
	if err := p.open(ctx); err != nil {
		return nil, err
	}
	if err := p.base(ctx); err != nil {
		return nil, err
	}
	if err := p.connect(ctx); err != nil {
		return nil, err
	}
	return p.reply(ctx)
}

// pushing is one push in progress, as the sender runs it.
type pushing struct {
	s     *Sender
	conn  *transport.Conn
	v     *Version
	start time.Time
	res   *Result

	nr         *repo.Repo    // the sender's repository, nil without StateDir
	lv         *repo.Version // v as recorded there
	pruneAfter bool

	ctrl  *transport.Stream
	w     *frameWriter
	rd    *frameReader
	cands []repo.Digest
	pre   *prepared // the offer the receiver takes
	extra *dialing
	b     base

	news      []newChunk
	patchable [][]chunk.Range // by image: the changed ranges, when patches apply
	lim       *limiter
	// entryOf finds the version's chunks by ID, listed says which are
	// among news: both made when the receiver first asks to heal.
	entryOf map[chunk.ID]newChunk
	listed  map[chunk.ID]bool
}

// record records v in the sender's repository (see local), unless it was
// recorded already.
func (p *pushing) record(ctx context.Context) error {
	s, v := p.s, p.v
	var err error
	if p.nr, err = s.nodes(); err != nil {
		return err
	}
	p.lv = v.Recorded
	if p.lv == nil {
		if p.lv, err = s.local(ctx, p.nr, v); err != nil {
			return err
		}
		p.pruneAfter = true
	} else if p.nr == nil {
		return errors.New("push a recorded version: the sender has no repository (StateDir)")
	}
	p.res.Digest, p.res.Parent = p.lv.Digest, p.lv.Parent
	return nil
}

// open sends hello and the candidate bases, and offers at once against the
// version the receiver last acknowledged to this sender (or against
// nothing, when the sender holds no other version of the set): when it is
// still the newest both hold, as it usually is, the offer costs no round
// trip of its own. Otherwise the receiver's answer names the base first:
// an offer of every entry would cost more than the round trip. A sender
// without a repository learns the receiver's head first.
func (p *pushing) open(ctx context.Context) error {
	s, v := p.s, p.v
	if err := p.w.write(msgHello, hello{version: protocolVersion, set: v.Set}.encode()); err != nil {
		return ctxErr(ctx, err)
	}
	p.cands = candidateDigests(p.nr, v.Set, p.lv)
	if err := p.w.write(msgCandidate, candidates{force: s.Force, digests: p.cands}.encode()); err != nil {
		return ctxErr(ctx, err)
	}
	assumed, assumedIdx := s.assumedBase(p.nr, p.conn.PeerID(), v.Set)
	if p.nr == nil || (assumedIdx == nil && len(p.cands) != 1) {
		if err := p.w.flush(); err != nil {
			return ctxErr(ctx, err)
		}
		return nil
	}
	var err error
	if p.pre, err = s.prepareOffer(p.nr, v, p.lv, assumed, assumedIdx); err != nil {
		return err
	}
	if err := p.pre.send(p.w); err != nil {
		return ctxErr(ctx, err)
	}
	// Data connections' handshakes overlap the offer's round trip when
	// enough chunks will probably travel.
	if s.wantsExtra(p.conn, newBytes(listNew(p.pre.ops, p.pre.results))) {
		s.startDial(ctx, p.conn, p.extra)
	}
	return nil
}

// base reads the receiver's base and, when the offer sent missed it (or
// none was sent), offers again against it.
func (p *pushing) base(ctx context.Context) error {
	s, v, res := p.s, p.v, p.res
	b, err := p.rd.expect(msgBase)
	if err != nil {
		return ctxErr(ctx, fmt.Errorf("handshake: %w", err))
	}
	if p.b, err = decodeBase(b); err != nil {
		return err
	}
	res.Base, res.Head = p.b.digest, p.b.head
	if p.nr == nil {
		p.lv.Parent = p.b.head
		if err := p.lv.Seal(idxOf(v), v.Meta); err != nil {
			return err
		}
		res.Digest, res.Parent = p.lv.Digest, p.lv.Parent
	}
	if p.pre == nil || !p.pre.matches(p.b) {
		// The receiver ignores that offer: offer again against the base
		// it named, with its indexes from the sender's repository (or
		// fetched once, if the sender lost them).
		baseOf, err := p.baseIndexes(ctx)
		if err != nil {
			return err
		}
		if p.pre, err = s.prepareOffer(p.nr, v, p.lv, p.b, baseOf); err != nil {
			return err
		}
		if err := p.pre.send(p.w); err != nil {
			return ctxErr(ctx, err)
		}
	}
	res.Images, res.ImageBytes, res.ChangedBytes = len(v.Images), p.pre.imageBytes, p.pre.changedBytes
	p.news = listNew(p.pre.ops, p.pre.results)
	res.NewChunks = len(p.news)
	p.patchable = p.patchRanges()
	s.log().Info("offered", "set", v.Set, "digest", p.lv.Digest.Short(), "base", digestName(p.pre.offer.base), "images", len(v.Images), "new_chunks", len(p.news))
	return nil
}

// baseIndexes returns the indexes of the receiver's base images that v
// has too: from the sender's repository, or fetched from the receiver.
func (p *pushing) baseIndexes(ctx context.Context) (map[string]*chunk.Index, error) {
	var held map[string]*chunk.Index
	if p.nr != nil && !p.b.digest.IsZero() {
		if bv, err := p.nr.ByDigest(p.v.Set, p.b.digest); err == nil {
			held = indexesOf(p.nr, bv)
		}
	}
	baseOf := map[string]*chunk.Index{}
	for _, ref := range p.b.images {
		if !hasImage(p.v, ref.name) {
			continue
		}
		x := held[ref.name]
		if x == nil || !indexIs(x, ref.digest) {
			var err error
			if x, err = fetchIndex(ctx, p.w, p.rd, ref); err != nil {
				return nil, err
			}
			p.res.IndexFetched = true
		}
		baseOf[ref.name] = x
	}
	return baseOf, nil
}

// patchRanges returns, by image, the changed ranges against which chunks
// may be sent as patches: patches need the receiver to hold exactly the
// version the changed ranges are relative to.
func (p *pushing) patchRanges() [][]chunk.Range {
	o := p.pre.offer
	patchable := make([][]chunk.Range, len(p.v.Images))
	for i, im := range p.v.Images {
		if im.Base == nil || im.Changed == nil || !o.images[i].based {
			continue
		}
		if im.Base.Params == im.Index.Params && indexIs(im.Base.MergeZeroRuns(), o.images[i].baseDigest) {
			patchable[i] = chunk.NormalizeRanges(im.Changed, max(im.Index.Size, im.Base.Size))
		}
	}
	return patchable
}

// connect starts dialling data connections when enough chunks will
// travel (the rounds do not wait for them: they join as they open), and
// makes the rate limiter over all of them.
func (p *pushing) connect(ctx context.Context) error {
	s := p.s
	if s.wantsExtra(p.conn, newBytes(p.news)) {
		s.startDial(ctx, p.conn, p.extra)
	}
	p.lim = newLimiter(s.BytesPerSec, func() uint64 {
		var n uint64
		for _, c := range p.conns() {
			n += c.QUIC().ConnectionStats().BytesSent
		}
		return n
	})
	return nil
}

// conns returns the push's connections opened so far: the control
// connection first.
func (p *pushing) conns() []*transport.Conn {
	return append([]*transport.Conn{p.conn}, p.extra.conns()...)
}

// reply serves the receiver's wants until it commits the version.
func (p *pushing) reply(ctx context.Context) (*Result, error) {
	for {
		typ, b, err := p.rd.read()
		if err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("waiting for the receiver: %w", unexpected(err)))
		}
		switch typ {
		case msgError:
			return nil, decodeError(b)
		case msgCommitted:
			return p.committed(b)
		case msgWant:
			if err := p.sendWanted(ctx, b); err != nil {
				return nil, err
			}
		case msgHeal:
			if err := p.healChunks(b); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: unexpected frame type %d", ErrMalformed, typ)
		}
	}
}

// committed records the receiver's acknowledgement and completes the
// result.
func (p *pushing) committed(b []byte) (*Result, error) {
	c, err := decodeCommitted(b)
	if err != nil {
		return nil, err
	}
	res, v := p.res, p.v
	res.Version, res.Head, res.Diverged = c.version, c.head, c.diverged
	if err := p.s.remember(p.conn.PeerID(), v.Set, c.version, p.lv.Digest); err != nil {
		return nil, fmt.Errorf("pushed, but could not record it locally: %w", err)
	}
	res.DurationMS = time.Since(p.start).Milliseconds()
	p.extra.wait() // a dial still under way is counted once it ends
	conns := p.conns()
	res.Connections = len(conns)
	for _, c := range conns {
		st := c.QUIC().ConnectionStats()
		res.BytesUp += st.BytesSent
		res.BytesDown += st.BytesReceived
		res.BytesLost += st.BytesLost
	}
	if c.diverged {
		return res, fmt.Errorf("%s: the receiver kept version %d (%s) but did not make it current: its current version %s is not an ancestor (both copies ran since their common base): %w",
			v.Set, c.version, p.lv.Digest.Short(), c.head.Short(), repo.ErrDiverged)
	}
	return res, nil
}

// sendWanted sends one round of the chunks the receiver wants.
func (p *pushing) sendWanted(ctx context.Context, b []byte) error {
	wt, err := decodeWant(b)
	if err != nil {
		return err
	}
	if len(wt.bitmap) != (len(p.news)+7)/8 {
		return fmt.Errorf("%w: want bitmap of %d bytes for %d chunks", ErrMalformed, len(wt.bitmap), len(p.news))
	}
	p.res.Rounds++
	if wt.round > 1 {
		p.patchable = make([][]chunk.Range, len(p.v.Images)) // whole chunks when asked again
	}
	err = p.s.sendRound(ctx, p.conn, p.extra, p.b.session, p.w, p.v, p.news, wt, p.lim, p.patchable, p.res)
	if err == nil {
		return nil
	}
	var se sourceError
	if errors.As(err, &se) {
		return se.err // this side's failure: the receiver only saw the push end
	}
	if ctx.Err() == nil {
		// The receiver may have stopped the round: its reason is on the
		// control stream.
		if rerr := readPeerError(p.ctrl, p.rd); rerr != nil {
			return rerr
		}
	}
	return ctxErr(ctx, err)
}

// prepared is an offer ready to send.
type prepared struct {
	offer        offer
	ops          [][]op
	results      [][]chunk.Entry
	imageBytes   int64
	changedBytes int64
}

// assumedBase is the version peer last acknowledged, as a base, with its
// indexes from the sender's repository; nothing when it knows of none.
func (s *Sender) assumedBase(nr *repo.Repo, peer transport.ID, set string) (base, map[string]*chunk.Index) {
	st, bv, idx := s.acked(nr, peer, set)
	if bv == nil {
		return base{}, nil
	}
	b := base{version: st.Version, digest: bv.Digest}
	for _, im := range bv.Images {
		b.images = append(b.images, imageRef{name: im.Name, digest: chunk.ID(im.Index)})
	}
	return b, idx
}

// prepareOffer expresses v (recorded as lv) as edits of the base images in
// baseOf (by name) of version b, with the lineage from lv back to b.
func (s *Sender) prepareOffer(nr *repo.Repo, v *Version, lv *repo.Version, b base, baseOf map[string]*chunk.Index) (*prepared, error) {
	o := offer{digest: lv.Digest, parent: lv.Parent, node: lv.Node, created: lv.Created, base: b.digest, meta: v.Meta}
	if nr != nil {
		links, err := nr.Ancestry(v.Set, lv.Digest, maxLinks)
		if err != nil {
			return nil, err
		}
		for i, l := range links {
			if l.Digest == b.digest {
				links = links[:i]
				break
			}
		}
		o.links = links
	}
	p := &prepared{offer: o}
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
	return p, nil
}

// indexIs reports whether x is the index digest d names.
func indexIs(x *chunk.Index, d chunk.ID) bool {
	got, _, err := indexDigest(x)
	return err == nil && got == d
}

// digestName names a digest for the log.
func digestName(d repo.Digest) string {
	if d.IsZero() {
		return "none"
	}
	return d.Short()
}

// matches reports whether the receiver, holding b, takes the offer: the
// rule the receiver applies too (see Receiver.serve).
func (p *prepared) matches(b base) bool {
	return offerMatches(p.offer, b)
}

func offerMatches(o offer, b base) bool {
	if o.base != b.digest {
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
		for _, frame := range opsFrames(ops, opsFrameSize) {
			if err := w.write(msgOps, opsMsg{image: i, ops: frame}.encode()); err != nil {
				return err
			}
		}
	}
	if err := w.write(msgOfferEnd, nil); err != nil {
		return err
	}
	return w.flush()
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

// opsFrameSize is about the most ops bytes a sender puts in one frame.
const opsFrameSize = 1 << 20

// opsFrames cuts ops into runs of about limit encoded bytes, splitting
// long inserts (an insert followed by an insert is the same edit).
func opsFrames(ops []op, limit int) [][]op {
	const opBytes, entryBytes = 4, 42 // at most, encoded
	var frames [][]op
	var cur []op
	size := 0
	for _, o := range ops {
		for {
			room := (limit - size - opBytes) / entryBytes
			if o.kind != opInsert || len(o.entries) <= room {
				break
			}
			if room > 0 {
				cur = append(cur, op{kind: opInsert, entries: o.entries[:room]})
				o.entries = o.entries[room:]
			}
			frames, cur, size = append(frames, cur), nil, 0
		}
		if size += opBytes + len(o.entries)*entryBytes; size > limit && len(cur) > 0 {
			frames, cur, size = append(frames, cur), nil, opBytes+len(o.entries)*entryBytes
		}
		cur = append(cur, o)
	}
	if len(cur) > 0 {
		frames = append(frames, cur)
	}
	return frames
}

// ctxErr prefers the context's error when it ended the operation.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return err
}
