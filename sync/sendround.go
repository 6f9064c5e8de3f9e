package sync

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/transport"
)

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
	var encs encoders
	defer encs.close()
	first := startLevel(conns[0].QUIC().ConnectionStats().MinRTT, s.BytesPerSec)
	if s.level != nil {
		first = *s.level
	}
	var levelBytes [len(levels)]atomic.Int64
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
			ctl := levelCtl{level: first}
			enc, err := encs.get(ctl.level)
			if err != nil {
				return err
			}
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
				var compTime, waitTime time.Duration
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
					t0 := time.Now()
					segs, lit := patchSegments(nc.entry, patchable[nc.image])
					if patchable[nc.image] != nil && lit < nc.entry.Length-64 {
						m.codec, m.data = codecPatch, encodePatch(comp[:0], segs, data, enc)
						patched.Add(1)
					} else if zs.try() {
						comp = enc.EncodeAll(data, comp[:0])
						levelBytes[ctl.level].Add(int64(len(data)))
						if zs.result(len(comp), len(data)) {
							m.codec, m.data = codecZstd, comp
						}
					}
					t1 := time.Now()
					head = m.appendHead(head[:0])
					if err := lim.wait(gctx, len(head)+len(m.data)); err != nil {
						return err
					}
					if err := fw.write2(msgChunk, head, m.data); err != nil {
						return err
					}
					compTime += t1.Sub(t0)
					waitTime += time.Since(t1)
					sentChunks.Add(1)
					sentBytes.Add(int64(len(data)))
					dataBytes.Add(int64(len(m.data)))
					if s.Progress != nil {
						s.Progress(int64(len(data)))
					}
				}
				if s.level == nil {
					if enc, err = encs.get(ctl.observe(compTime, waitTime)); err != nil {
						return err
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
	for l := range levelBytes {
		if n := levelBytes[l].Load(); n > 0 {
			if res.Compressed == nil {
				res.Compressed = map[string]int64{}
			}
			res.Compressed[levels[l].String()] += n
		}
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
