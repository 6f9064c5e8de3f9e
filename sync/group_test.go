package sync

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/transport"
)

// TestChunkGroups: groups of chunks compressed together arrive whole, a
// damaged chunk in a group is refused alone and asked for again, and a
// peer's group that breaks a bound ends the push.
func TestChunkGroups(t *testing.T) {
	enc, _ := zstd.NewWriter(nil)
	a, b := bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("b"), 4096)
	big, big2 := bytes.Repeat([]byte("c"), 600<<10), bytes.Repeat([]byte("d"), 600<<10)
	bomb := enc.EncodeAll(make([]byte, 64<<20), nil)
	tests := []struct {
		name   string
		chunks [][]byte // the offer's entries
		params chunk.Params
		group  func(round uint64) chunksMsg // one ordinal: sent as a chunk alone
		want   error                        // nil: committed
	}{
		{"two chunks", [][]byte{a, b}, chunk.Pages(), func(uint64) chunksMsg {
			return chunksMsg{ordinals: []uint64{0, 1}, codec: codecZstd, data: enc.EncodeAll(append(slices.Clone(a), b...), nil)}
		}, nil},
		{"in the sender's order", [][]byte{a, b}, chunk.Pages(), func(uint64) chunksMsg {
			return chunksMsg{ordinals: []uint64{1, 0}, codec: codecZstd, data: enc.EncodeAll(append(slices.Clone(b), a...), nil)}
		}, nil},
		{"one chunk damaged in round 1", [][]byte{a, b}, chunk.Pages(), func(round uint64) chunksMsg {
			if round > 1 {
				return chunksMsg{ordinals: []uint64{1}, codec: codecRaw, data: b} // the damaged one, alone
			}
			bad := slices.Clone(b)
			bad[7] = 'x'
			return chunksMsg{ordinals: []uint64{0, 1}, codec: codecZstd, data: enc.EncodeAll(append(slices.Clone(a), bad...), nil)}
		}, nil},
		{"declares 64 MiB", [][]byte{a, b}, chunk.Pages(), func(uint64) chunksMsg {
			return chunksMsg{ordinals: []uint64{0, 1}, codec: codecZstd, data: bomb}
		}, ErrBadChunks},
		{"a chunk not asked for", [][]byte{a, b}, chunk.Pages(), func(uint64) chunksMsg {
			return chunksMsg{ordinals: []uint64{0, 2}, codec: codecZstd, data: enc.EncodeAll(append(slices.Clone(a), b...), nil)}
		}, ErrMalformed},
		{"a chunk twice", [][]byte{a, b}, chunk.Pages(), func(uint64) chunksMsg {
			return chunksMsg{ordinals: []uint64{0, 0}, codec: codecZstd, data: enc.EncodeAll(append(slices.Clone(a), a...), nil)}
		}, ErrMalformed},
		{"over maxGroupBytes", [][]byte{big, big2}, chunk.CDCWithAverage(256 << 10), func(uint64) chunksMsg {
			return chunksMsg{ordinals: []uint64{0, 1}, codec: codecZstd, data: enc.EncodeAll(append(slices.Clone(big), big2...), nil)}
		}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPeersWith(t, func(r *Receiver) { r.Limits = Limits{Stall: 5 * time.Second} })
			rp := p.rawPush(t, "vm")
			var es []chunk.Entry
			var size int64
			for _, c := range tt.chunks {
				es = append(es, chunk.Entry{Offset: size, Length: int64(len(c)), ID: chunk.Sum(c)})
				size += int64(len(c))
			}
			rp.offerOps(t, size, tt.params, []op{{kind: opInsert, entries: es}})
			var err error
			var typ byte
			rounds := uint64(0)
			for round := uint64(1); ; round++ {
				if typ, err = rp.outcome(t); err != nil || typ != msgWant {
					break
				}
				rounds = round
				rp.dataRound(t, round, func(w *frameWriter) {
					if m := tt.group(round); len(m.ordinals) == 1 {
						w.write(msgChunk, chunkMsg{ordinal: m.ordinals[0], codec: m.codec, data: m.data}.appendTo(nil))
					} else {
						w.write2(msgChunks, m.appendHead(nil), m.data)
					}
				})
			}
			if tt.want == nil {
				if err != nil || typ != msgCommitted {
					t.Fatalf("got frame %d, %v; want committed", typ, err)
				}
				if wantRounds := uint64(1 + strings.Count(tt.name, "damaged")); rounds != wantRounds {
					t.Errorf("%d rounds, want %d", rounds, wantRounds)
				}
				for i, c := range tt.chunks {
					if got, err := readStore(t, p.repo).Get(t.Context(), es[i].ID); err != nil || !bytes.Equal(got, c) {
						t.Fatalf("chunk %d stored as %d bytes, %v", i, len(got), err)
					}
				}
				return
			}
			rp.assertRefused(t, p, err, tt.want)
		})
	}
}

// dataRound announces a round of one data stream and writes its frames.
func (rp *rawPush) dataRound(t *testing.T, round uint64, frames func(*frameWriter)) {
	t.Helper()
	rp.send(t, msgSent, sent{round: round, streams: 1}.encode())
	ds, err := rp.c.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w := newFrameWriter(ds)
	w.write(msgData, dataHeader{round: round, session: rp.tok}.encode())
	frames(w)
	w.flush()
	ds.Close()
	io.Copy(io.Discard, ds)
}

// assertRefused checks that the push ended with want on both sides (a
// malformed frame closes the connection: the sender sees a protocol
// violation).
func (rp *rawPush) assertRefused(t *testing.T, p *peers, err, want error) {
	t.Helper()
	if !errors.Is(err, want) && !(errors.Is(want, ErrMalformed) && errors.Is(err, transport.ErrProtocol)) {
		t.Fatalf("got %v, want %v", err, want)
	}
	rp.c.Close()
	if rerr := <-p.errs; !errors.Is(rerr, want) {
		t.Fatalf("the receiver ended with %v, want %v", rerr, want)
	}
}

func FuzzDecodeChunks(f *testing.F) {
	f.Add(chunksMsg{ordinals: []uint64{0, 1}, codec: codecZstd}.appendHead(nil))
	f.Add(append(chunksMsg{ordinals: []uint64{7, 300, 2}, codec: codecZstd}.appendHead(nil), 1, 2, 3))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decodeChunks(p)
		if err != nil {
			return
		}
		if len(m.ordinals) < 2 || len(m.ordinals) > maxGroupChunks || m.codec != codecZstd {
			t.Fatalf("decoded a group the bounds refuse: %d chunks, codec %d", len(m.ordinals), m.codec)
		}
		m2, err := decodeChunks(append(m.appendHead(nil), m.data...))
		if err != nil || !slices.Equal(m2.ordinals, m.ordinals) || !bytes.Equal(m2.data, m.data) {
			t.Fatalf("re-decode: %+v, %v", m2, err)
		}
	})
}

// A push on a long path sends chunks grouped, fewer bytes than alone at
// the same level, and the receiver holds the same version.
func TestGroupedPush(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	images := map[string][]byte{"disk": textData(r, 3<<20), "ram": textData(r, 1<<20)}
	var data [2]int64
	level := 0
	for i, groups := range []bool{false, true} {
		p := newPeers(t)
		res, err := p.push(t, t.Context(), &Sender{StateDir: t.TempDir(), Streams: 1, level: &level, groups: &groups}, imageVersion(t, "vm", images))
		if err != nil {
			t.Fatal(err)
		}
		assertMaterialized(t, p.repo, "vm", images)
		if grouped := res.Grouped > 0; grouped != groups {
			t.Fatalf("groups %v: %d of %d chunks grouped", groups, res.Grouped, res.ChunksSent)
		}
		data[i] = res.DataBytes
		// One stream's groups wait for its next batch until the
		// round's end nears: they hold more chunks than a batch.
		if groups && res.Grouped < sendBatch*res.Groups {
			t.Errorf("%d chunks in %d groups: no larger than a batch (%d)", res.Grouped, res.Groups, sendBatch)
		}
	}
	t.Logf("data bytes at %s, alone: %d, grouped: %d", levels[level], data[0], data[1])
	if data[1] >= data[0] {
		t.Errorf("grouped chunks took %d bytes, alone %d", data[1], data[0])
	}
}

// A receiver of protocol 3 serves a protocol 2 sender, whose chunks come
// alone.
func TestProtocol2SenderIsServed(t *testing.T) {
	p := newPeers(t)
	rp := p.rawPushVersion(t, "vm", 2)
	a, b := bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("b"), 4096)
	es := []chunk.Entry{{Offset: 0, Length: 4096, ID: chunk.Sum(a)}, {Offset: 4096, Length: 4096, ID: chunk.Sum(b)}}
	rp.offerOps(t, 8192, chunk.Pages(), []op{{kind: opInsert, entries: es}})
	if typ, err := rp.outcome(t); err != nil || typ != msgWant {
		t.Fatalf("answer to the offer: frame %d, %v", typ, err)
	}
	rp.dataRound(t, 1, func(w *frameWriter) {
		w.write(msgChunk, chunkMsg{ordinal: 0, codec: codecRaw, data: a}.appendTo(nil))
		w.write(msgChunk, chunkMsg{ordinal: 1, codec: codecRaw, data: b}.appendTo(nil))
	})
	if typ, err := rp.outcome(t); err != nil || typ != msgCommitted {
		t.Fatalf("after the chunks: frame %d, %v; want committed", typ, err)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"img": append(slices.Clone(a), b...)})
}
