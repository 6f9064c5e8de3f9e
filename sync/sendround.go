package sync

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/transport"
)

// smallRound is the size of the wanted chunks up to which a round groups
// them whatever the path.
const smallRound = 8 << 20

// sendRound sends the wanted chunks over parallel data streams: it
// announces the streams, chooses how to compress (plan), runs the streams
// (each takes batches of the wanted chunks in turn) and adds what they
// sent to res. The streams start on the control connection conn at once;
// one more stream is announced for each extra data connection, opened or
// opening, and for each the round may dial when conn shows random loss
// (mayGrow): such a stream runs on its connection once it opens, or on
// conn, empty, when the round has nothing left by then. The Streams are
// then shared out over the connections, at least one on each.
func (s *Sender) sendRound(ctx context.Context, conn *transport.Conn, extra *dialing, session token, w *frameWriter, v *Version, news []newChunk, wt want, lim *limiter, patchable [][]chunk.Range, res *Result) error {
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
	streams = max(1, min(streams, maxStreams, len(todo)))
	reserved := extra.newRound()
	grow := s.mayGrow(conn, extra)
	if grow {
		reserved = s.dataConns(conn) - 1
	}
	if reserved > 0 {
		// The streams share out the connections: what a stream took
		// waits for its connection's window, and a lossy connection's
		// window is small.
		streams = max(1, streams/(reserved+1))
	}
	reserved = min(reserved, maxStreams-streams)
	if err := w.write(msgSent, sent{round: wt.round, streams: uint64(streams + reserved)}.encode()); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	rp := &roundPlan{s: s, v: v, news: news, todo: todo, wt: wt, session: session, lim: lim, patchable: patchable, drained: make(chan struct{})}
	defer rp.encs.close()
	rp.plan(conn.QUIC().ConnectionStats().MinRTT)
	rp.batchLen, rp.bufSize = sendBatch, sendBufSize
	if reserved > 0 {
		rp.batchLen, rp.bufSize = batchLen(len(todo), streams+reserved), joinBufSize
		rp.taper = streams + reserved
	}
	g, gctx := errgroup.WithContext(ctx)
	for range streams {
		g.Go(func() error { return rp.stream(gctx, conn) })
	}
	for range reserved {
		g.Go(func() error { return rp.reservedStream(gctx, conn, extra, grow) })
	}
	var watching sync.WaitGroup
	if grow {
		watch, stop := context.WithCancel(gctx)
		defer func() { stop(); watching.Wait() }()
		watching.Go(func() { rp.watchLoss(watch, ctx, conn, extra) })
	}
	err := g.Wait()
	rp.stats.addTo(res)
	return err
}

// batchLen is how many chunks a stream takes at a time in a round of n
// chunks over the given streams, when connections may join the round:
// sendBatch, or fewer in a small round, so that they find batches left to
// take.
func batchLen(n, streams int) int {
	return max(minBatch, min(sendBatch, n/(4*max(streams, 1))))
}

// minBatch is the fewest chunks a stream takes at a time.
const minBatch = 4

// A data stream's write buffer: what a stream holds beyond the batch it
// sends is taken from connections that join the round later, so it is
// small when they may.
const (
	sendBufSize = 256 << 10
	joinBufSize = 32 << 10
)

// reservedStream runs the stream reserved for an extra data connection:
// on that connection once it opens, or on conn, empty, when no dial is
// under way or nothing is left to send.
func (rp *roundPlan) reservedStream(ctx context.Context, conn *transport.Conn, extra *dialing, grow bool) error {
	for {
		c, changed, waiting := extra.claim(grow)
		if c != nil {
			return rp.stream(ctx, c)
		}
		if !waiting {
			return rp.stream(ctx, conn)
		}
		select {
		case <-changed:
		case <-rp.drained:
			return rp.stream(ctx, conn)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watchLoss dials the extra data connections, under dialCtx (the push's),
// once conn shows random loss (randomLoss) while the round still has
// growFrom bytes or more to send. It returns when the round has nothing
// left or ctx ends.
func (rp *roundPlan) watchLoss(ctx, dialCtx context.Context, conn *transport.Conn, extra *dialing) {
	st := conn.QUIC().ConnectionStats()
	lost := st.PacketsLost
	tick := time.NewTicker(max(st.MinRTT/4, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-rp.drained:
			return
		case <-ctx.Done():
			return
		}
		st := conn.QUIC().ConnectionStats()
		if randomLoss(st, lost) && rp.left() >= growFrom {
			rp.s.startDial(dialCtx, conn, extra)
			return
		}
		lost = st.PacketsLost
	}
}

// left is how many bytes of the round no stream took yet.
func (rp *roundPlan) left() int64 {
	var n int64
	for _, i := range rp.todo[min(int(rp.next.Load()), len(rp.todo)):] {
		n += rp.news[i].entry.Length
	}
	return n
}

// roundPlan is a round being sent: the wanted chunks (todo, ordinals into
// news), how they are compressed, and what the streams sent.
type roundPlan struct {
	s         *Sender
	v         *Version
	news      []newChunk
	todo      []int
	wt        want
	session   token
	lim       *limiter
	patchable [][]chunk.Range

	next       atomic.Int64 // the next batch's first index into todo
	batchLen   int          // chunks a stream takes at a time
	taper      int          // when not 0, the streams: batches shrink toward the end (take)
	bufSize    int          // each stream's write buffer
	drained    chan struct{}
	drainOnce  sync.Once
	encs       encoders
	first, top int  // zstd levels: the one to start at, the best to go to
	fixedLevel bool // the streams keep the first level
	groups     bool
	skipLimit  int // the zstdSkipper's backoff limit
	stats      roundStats
}

// plan chooses the compression levels and whether chunks are grouped.
// On a short path the receiver's CPU is more likely the limit than the
// link: it would only pay to compress each chunk of a group again. A small
// round costs little CPU either way: its chunks (a few pages and disk
// blocks, the daily case) go together, at the level smallLevel chooses.
func (rp *roundPlan) plan(rtt time.Duration) {
	s := rp.s
	rp.first, rp.top = levelRange(rtt, s.BytesPerSec)
	var todoBytes int64
	for _, i := range rp.todo {
		todoBytes += rp.news[i].entry.Length
	}
	if s.Wanted != nil {
		s.Wanted(todoBytes)
	}
	small := todoBytes <= smallRound
	if small {
		l := smallLevel(rtt, s.BytesPerSec, todoBytes)
		rp.first, rp.top, rp.fixedLevel = l, l, true
	}
	if s.level != nil {
		rp.first, rp.top, rp.fixedLevel = *s.level, *s.level, true
	}
	rp.groups = rtt >= extraConnsRTT || small
	if s.groups != nil {
		rp.groups = *s.groups
	}
	rp.skipLimit = skipShort
	if rtt < extraConnsRTT && !capped(s.BytesPerSec) && !small {
		rp.skipLimit = skipLAN
	}
}

// smallLevel is the level of a small round of n bytes: the best on a long
// or capped path, where every byte saved is time saved, once the round is
// large enough (smallBestFrom) to repay the best level's encoders. On a
// short path the round's time is the encoders' rather than the link's: an
// encoder at the best level compresses at ≈28 MB/s and allocates ≈34 MiB
// of tables for each of its concurrent users, fresh in each 'ntc push'
// process, to send a megabyte or two.
func smallLevel(rtt time.Duration, bytesPerSec, n int64) int {
	if (rtt >= extraConnsRTT || capped(bytesPerSec)) && n >= smallBestFrom {
		return len(levels) - 1
	}
	return smallShortLevel
}

// smallBestFrom is the round size from which a small round on a long or
// capped path goes at the best level. The best level sends ≈2.7% fewer
// bytes than the better one (the Debian chunks' figures in level.go):
// for 4 MiB, ≈40 ms at 20 Mbit/s, about what its encoders cost a 'ntc push'
// process to set up. An idle guest's checkpoint (≈1 MB of pages) cost the
// sender 0.72 s of CPU over bench's dsl at the best level (0.22 s on lan,
// where the better level was used) and its round took 450 ms for 95 KB.
const smallBestFrom = 4 << 20

// smallShortLevel is a small round's level on a short, uncapped path:
// the better level, whose encoder allocates ≈4.5 MiB of tables. In
// bench's SmallPush (1% of 128 MiB, loopback, the same lock hold, two
// rotations) the round took 73 and 129 ms at the best level, 42 and 45
// at the better one, 43 and 75 at the default one, and 55 and 57 with
// the chunks compressed alone at the fastest level.
const smallShortLevel = 2

// stream opens one data stream on conn and sends batches of the wanted
// chunks over it until none is left.
func (rp *roundPlan) stream(ctx context.Context, conn *transport.Conn) error {
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return fmt.Errorf("open data stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { st.Cancel(transport.ErrShuttingDown) })
	defer stop()
	ds := &dataSender{s: rp.s, ctx: ctx, lim: rp.lim, encs: &rp.encs, ctl: levelCtl{level: rp.first, top: rp.top, fixed: rp.fixedLevel, minOut: 2 * rp.bufSize}, groups: rp.groups, stats: &rp.stats,
		zs: zstdSkipper{limit: rp.skipLimit}}
	if ds.enc, err = rp.encs.get(rp.first); err != nil {
		return err
	}
	ds.fw = newFrameWriterSize(st, rp.bufSize)
	if err := ds.fw.write(msgData, dataHeader{round: rp.wt.round, session: rp.session}.encode()); err != nil {
		return err
	}
	if err := ds.fw.flush(); err != nil {
		return err
	}
	var rbuf []byte
	for {
		k, n := rp.take()
		if n == 0 {
			rp.drainOnce.Do(func() { close(rp.drained) })
			break
		}
		if err := rp.batch(ds, k, n, &rbuf); err != nil {
			return err
		}
	}
	if err := ds.flushGroup(); err != nil {
		return err
	}
	if err := ds.fw.flush(); err != nil {
		return err
	}
	return st.Close()
}

// take claims the next batch for a stream: todo[k:k+n], n = 0 when none
// is left. Over several connections the batches shrink toward the end of
// the round (to a share of what is left for each stream, down to one
// chunk): a batch waits for its connection's window, and a connection
// that lost packets late in the round would otherwise hold the round's
// last batches, and the round, for many of its round trips.
func (rp *roundPlan) take() (k, n int) {
	for {
		k := int(rp.next.Load())
		left := len(rp.todo) - k
		if left <= 0 {
			return len(rp.todo), 0
		}
		n := min(rp.batchLen, left)
		if rp.taper > 0 {
			n = min(n, max(1, left/(2*rp.taper)))
		}
		if rp.next.CompareAndSwap(int64(k), int64(k+n)) {
			return k, n
		}
	}
}

// batch reads and sends the wanted chunks todo[k:k+n] on ds, with rbuf
// as the read buffer.
func (rp *roundPlan) batch(ds *dataSender, k, n int, rbuf *[]byte) error {
	batch := make([]newChunk, 0, n)
	for _, i := range rp.todo[k : k+n] {
		batch = append(batch, rp.news[i])
	}
	var total int64
	for _, nc := range batch {
		total += nc.entry.Length
	}
	if int64(cap(*rbuf)) < total {
		*rbuf = make([]byte, total)
	}
	buf := (*rbuf)[:total]
	datas, err := readBatch(ds.ctx, rp.v, batch, &buf)
	if err != nil {
		return sourceError{err}
	}
	for j, nc := range batch {
		data := datas[j]
		// The receiver verifies every chunk; a chunk it refused is asked
		// for again, and checked here first then.
		if rp.wt.round > 1 && !rp.s.unverified {
			if err := chunk.Verify(nc.entry.ID, data, rp.v.Images[nc.image].Name); err != nil {
				return sourceError{fmt.Errorf("the image changed since it was indexed (index it again): %w", err)}
			}
		}
		if err := ds.chunk(uint64(rp.todo[k+j]), nc.entry, data, rp.patchable[nc.image]); err != nil {
			return err
		}
	}
	return ds.endBatch(rp.holdGroup())
}

// holdGroup reports whether a stream's group may wait for the stream's
// next batch to fill it: while the batches are not tapering toward the
// round's end. Groups as large as the batches (down to minBatch chunks
// when connections may join) compress worse than full ones: bench's
// Debian chunks in 64 KiB groups at the best level come to 1.007 of the
// dedup oracle, in 1 MiB groups to 0.966.
func (rp *roundPlan) holdGroup() bool {
	left := len(rp.todo) - int(rp.next.Load())
	return left > 0 && left >= 2*max(rp.taper, 1)*rp.batchLen
}

// roundStats counts what a round's data streams sent.
type roundStats struct {
	chunks, bytes, data, patched, grouped, groups atomic.Int64
	levelBytes                                    [len(levels)]atomic.Int64
}

// addTo adds what was sent to res.
func (st *roundStats) addTo(res *Result) {
	res.ChunksSent += int(st.chunks.Load())
	res.ChunkBytes += st.bytes.Load()
	res.DataBytes += st.data.Load()
	res.Patched += int(st.patched.Load())
	res.Grouped += int(st.grouped.Load())
	res.Groups += int(st.groups.Load())
	for l := range st.levelBytes {
		if n := st.levelBytes[l].Load(); n > 0 {
			if res.Compressed == nil {
				res.Compressed = map[string]int64{}
			}
			res.Compressed[levels[l].String()] += n
		}
	}
}

// dataSender writes one data stream's chunks: patches, chunks compressed
// alone, or groups compressed together, at the level its levelCtl
// chooses.
type dataSender struct {
	s    *Sender
	ctx  context.Context
	fw   *frameWriter
	lim  *limiter
	encs *encoders
	enc  *zstd.Encoder
	ctl  levelCtl
	zs   zstdSkipper
	// groups has the chunks of a batch compressed together (msgChunks):
	// `go test -bench CompressDebian ./bench/` measured the chunks a push
	// of bench's Debian update sends at 0.944 of the bytes compressed
	// alone at the fastest level, and at 0.881 at the best level (0.934
	// alone), at no more sender CPU. The receiver then compresses each
	// chunk again for its store.
	groups bool
	stats  *roundStats

	head, comp []byte
	// group holds the ordinals and lengths of the chunks waiting in gbuf
	// to be compressed together.
	group []groupItem
	gbuf  []byte
	// comp and wait time of the batch so far, and the bytes it wrote.
	compTime, waitTime time.Duration
	outBytes           int
}

type groupItem struct {
	ordinal uint64
	length  int
}

// chunk sends (or groups) the chunk of entry e with content data.
func (d *dataSender) chunk(ordinal uint64, e chunk.Entry, data []byte, changed []chunk.Range) error {
	t0 := time.Now()
	segs, lit := patchSegments(e, changed)
	switch {
	case changed != nil && lit < e.Length-64:
		d.comp = encodePatch(d.comp[:0], segs, data, d.enc)
		d.stats.patched.Add(1)
		return d.send(t0, chunkMsg{ordinal: ordinal, codec: codecPatch, data: d.comp}, len(data))
	case d.groups:
		if len(d.gbuf)+len(data) > maxGroupBytes || len(d.group) == maxGroupChunks {
			if err := d.flushGroup(); err != nil {
				return err
			}
		}
		d.group = append(d.group, groupItem{ordinal, len(data)})
		d.gbuf = append(d.gbuf, data...)
		return nil
	}
	m := chunkMsg{ordinal: ordinal, codec: codecRaw, data: data}
	if d.zs.try() {
		d.comp = d.enc.EncodeAll(data, d.comp[:0])
		d.stats.levelBytes[d.ctl.level].Add(int64(len(data)))
		if d.zs.result(len(d.comp), len(data)) {
			m.codec, m.data = codecZstd, d.comp
		}
	}
	return d.send(t0, m, len(data))
}

// flushGroup sends the grouped chunks: compressed together if they
// compress, else each as it is.
func (d *dataSender) flushGroup() error {
	group, gbuf := d.group, d.gbuf
	d.group, d.gbuf = d.group[:0], d.gbuf[:0]
	if len(group) == 0 {
		return nil
	}
	t0 := time.Now()
	if len(group) > 1 && d.zs.try() {
		d.comp = d.enc.EncodeAll(gbuf, d.comp[:0])
		d.stats.levelBytes[d.ctl.level].Add(int64(len(gbuf)))
		if d.zs.result(len(d.comp), len(gbuf)) {
			m := chunksMsg{codec: codecZstd, data: d.comp}
			for _, it := range group {
				m.ordinals = append(m.ordinals, it.ordinal)
			}
			t1 := time.Now()
			d.head = m.appendHead(d.head[:0])
			if err := d.write(msgChunks, d.head, m.data); err != nil {
				return err
			}
			d.account(t0, t1, len(group), len(gbuf), len(m.data))
			d.stats.grouped.Add(int64(len(group)))
			d.stats.groups.Add(1)
			return nil
		}
	}
	for _, it := range group {
		data := gbuf[:it.length]
		gbuf = gbuf[it.length:]
		if len(group) == 1 && d.zs.try() {
			return d.sendAlone(t0, it.ordinal, data)
		}
		if err := d.send(t0, chunkMsg{ordinal: it.ordinal, codec: codecRaw, data: data}, len(data)); err != nil {
			return err
		}
		t0 = time.Now()
	}
	return nil
}

// sendAlone compresses one chunk alone and sends it.
func (d *dataSender) sendAlone(t0 time.Time, ordinal uint64, data []byte) error {
	m := chunkMsg{ordinal: ordinal, codec: codecRaw, data: data}
	d.comp = d.enc.EncodeAll(data, d.comp[:0])
	d.stats.levelBytes[d.ctl.level].Add(int64(len(data)))
	if d.zs.result(len(d.comp), len(data)) {
		m.codec, m.data = codecZstd, d.comp
	}
	return d.send(t0, m, len(data))
}

// send writes one chunk frame; the time since t0 was compression.
func (d *dataSender) send(t0 time.Time, m chunkMsg, raw int) error {
	t1 := time.Now()
	d.head = m.appendHead(d.head[:0])
	if err := d.write(msgChunk, d.head, m.data); err != nil {
		return err
	}
	d.account(t0, t1, 1, raw, len(m.data))
	return nil
}

// write sends a frame at the rate the limiter allows.
func (d *dataSender) write(typ byte, head, body []byte) error {
	if err := d.lim.wait(d.ctx, len(head)+len(body)); err != nil {
		return err
	}
	return d.fw.write2(typ, head, body)
}

// account records chunks sent: compressed from t0 to t1, then waited
// for until now.
func (d *dataSender) account(t0, t1 time.Time, chunks, raw, data int) {
	d.compTime += t1.Sub(t0)
	d.waitTime += time.Since(t1)
	d.outBytes += data
	d.stats.chunks.Add(int64(chunks))
	d.stats.bytes.Add(int64(raw))
	d.stats.data.Add(int64(data))
	if d.s.Progress != nil {
		d.s.Progress(int64(raw))
	}
}

// endBatch sends what is grouped, unless hold lets the group wait for
// the next batch, and lets the level controller see the batch.
func (d *dataSender) endBatch(hold bool) error {
	if !hold {
		if err := d.flushGroup(); err != nil {
			return err
		}
	}
	comp, wait, out := d.compTime, d.waitTime, d.outBytes
	d.compTime, d.waitTime, d.outBytes = 0, 0, 0
	var err error
	d.enc, err = d.encs.get(d.ctl.observe(comp, wait, out))
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
	// limit bounds the backoff (chunks skipped between two tries); 0
	// means skipShort.
	limit int
}

// Backoff limits: on a short uncapped path, where the link outruns the
// CPU, a sender skips up to 256 chunks (4 MiB of 16 KiB chunks) between
// tries of incompressible data; elsewhere, where bytes are time, 16.
// BenchmarkPushCPU's sender (1 GiB incompressible, loopback) spent 7-8% of
// its CPU in the tries at 16.
const (
	skipShort = 16
	skipLAN   = 256
)

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
	limit := z.limit
	if limit == 0 {
		limit = skipShort
	}
	z.backoff = min(max(2*z.backoff, 1), limit)
	z.skip = z.backoff
	return comp < raw
}
