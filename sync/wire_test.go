package sync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

func entriesOf(tb testing.TB, data []byte) []chunk.Entry {
	tb.Helper()
	x, _, err := chunk.Build(tb.Context(), chunk.Bytes(data), chunk.Params{Kind: chunk.CDC, Pol: chunk.DefaultPolynomial, MinSize: 512, MaxSize: 4096, AvgBits: 9}, chunk.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return x.Entries
}

func TestDeltaRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for i := range 50 {
		a := randomData(r, 1+r.IntN(200<<10))
		b := slices.Clone(a)
		switch i % 4 {
		case 0:
			copy(b[r.IntN(len(b)):], randomData(r, 1+r.IntN(5000)))
		case 1:
			b = append(b, randomData(r, r.IntN(9000))...)
		case 2:
			b = b[:r.IntN(len(b))+1]
		case 3:
			tail := b[r.IntN(len(b)):]
			clear(tail[:min(len(tail), 100000)])
		}
		base, next := entriesOf(t, a), entriesOf(t, b)
		ops := makeDelta(base, next)
		var e enc
		encodeOps(&e, ops)
		d := dec{b: e.b}
		got := decodeOps(&d)
		if err := d.done(); err != nil {
			t.Fatal(err)
		}
		rebuilt, err := applyDelta(base, got)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rebuilt, next) {
			t.Fatalf("case %d: delta does not rebuild the new entries", i)
		}
	}
	// An unchanged image is one keep op, whatever its size.
	base := entriesOf(t, randomData(r, 1<<20))
	if ops := makeDelta(base, base); len(ops) != 1 || ops[0].kind != opKeep {
		t.Fatalf("unchanged image: %d ops", len(ops))
	}
}

func TestFramesOneByteAtATime(t *testing.T) {
	var buf bytes.Buffer
	w := newFrameWriter(&buf)
	msgs := [][]byte{hello{version: 1, set: "vm"}.encode(), want{round: 2, bitmap: []byte{1, 2, 3}}.encode(), nil}
	for i, m := range msgs {
		if err := w.write(byte(i+1), m); err != nil {
			t.Fatal(err)
		}
	}
	w.flush()
	rd := newFrameReader(iotest.OneByteReader(&buf))
	for i, m := range msgs {
		typ, p, err := rd.read()
		if err != nil || typ != byte(i+1) || !bytes.Equal(p, m) {
			t.Fatalf("frame %d: %d %x %v", i, typ, p, err)
		}
	}
	if _, _, err := rd.read(); err == nil {
		t.Fatal("read past the end")
	}
}

func TestTruncatedFrame(t *testing.T) {
	var buf bytes.Buffer
	w := newFrameWriter(&buf)
	w.write(msgOffer, bytes.Repeat([]byte{7}, 100))
	w.flush()
	rd := newFrameReader(bytes.NewReader(buf.Bytes()[:50]))
	if _, _, err := rd.read(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated frame: %v", err)
	}
	huge := []byte{msgOffer, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, _, err := newFrameReader(bytes.NewReader(huge)).read(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized frame: %v", err)
	}
}

func offerSeed() []byte {
	return offer{digest: repo.Digest{3}, parent: repo.Digest{2}, node: "n", created: time.Unix(1, 2).UTC(), base: repo.Digest{2}, links: []repo.Link{{Digest: repo.Digest{3}, Parent: repo.Digest{2}}}, meta: []byte("{}"), images: []offerImage{
		{name: "disk", size: 1 << 20, params: chunk.DefaultCDC(), based: true},
		{name: "ram", size: 4096, params: chunk.Pages()}}}.encode()
}

func FuzzDecodeOffer(f *testing.F) {
	f.Add(offerSeed())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeOffer(b)
		if err != nil {
			return
		}
		m2, err := decodeOffer(m.encode())
		if err != nil || m2.digest != m.digest || m2.parent != m.parent || m2.node != m.node || !m2.created.Equal(m.created) ||
			m2.base != m.base || !slices.Equal(m2.links, m.links) || len(m2.images) != len(m.images) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzDecodeOps(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 9))
	a := randomData(r, 50000)
	b := slices.Clone(a)
	copy(b[1000:], randomData(r, 3000))
	base := entriesOf(f, a)
	var e enc
	encodeOps(&e, makeDelta(base, entriesOf(f, b)))
	f.Add(opsMsg{image: 0, ops: nil}.encode())
	f.Add(append([]byte{0}, e.b...))
	f.Add(append([]byte{0, 1, byte(opInsert), 4}, 3, 3, 3, 3)) // one-byte zero entries
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decodeOpsMsg(p)
		if err != nil {
			return
		}
		// Applying arbitrary ops never panics; a result is a valid list.
		es, err := applyDelta(base, m.ops)
		// The receiver's builder, fed the same bytes as they are decoded,
		// agrees with applyDelta, with runs of zero entries merged.
		var size int64
		for _, e := range es {
			size += e.Length
		}
		b := &imageBuilder{name: "x", base: base, size: size, maxChunk: 1 << 62, max: 1 << 30}
		d := dec{b: p}
		d.uvarint()
		berr := decodeOpsTo(&d, b)
		if berr == nil {
			berr = b.finish()
		}
		if err != nil {
			if berr == nil && len(es) == 0 && size == 0 {
				t.Fatalf("builder took ops applyDelta refused: %v", err)
			}
			return
		}
		if berr != nil {
			t.Fatalf("builder refused ops applyDelta took: %v", berr)
		}
		want := (&chunk.Index{Entries: es}).MergeZeroRuns().Entries
		if !slices.Equal(b.out, want) {
			t.Fatalf("builder made %d entries, applyDelta %d (merged)", len(b.out), len(want))
		}
		pos := int64(0)
		for _, e := range es {
			if e.Offset != pos || e.Length <= 0 {
				t.Fatalf("applyDelta returned a broken list at %d", pos)
			}
			pos += e.Length
		}
	})
}

func FuzzDecodeFrames(f *testing.F) {
	var buf bytes.Buffer
	w := newFrameWriter(&buf)
	w.write(msgHello, hello{version: 1, set: "vm"}.encode())
	w.write(msgBase, base{version: 2, images: []imageRef{{name: "disk"}}}.encode())
	w.write(msgWant, want{round: 1, bitmap: []byte{0xff}}.encode())
	w.write(msgChunk, chunkMsg{ordinal: 3, codec: codecRaw, data: []byte("abc")}.appendTo(nil))
	w.write2(msgChunks, chunksMsg{ordinals: []uint64{3, 4}, codec: codecZstd}.appendHead(nil), []byte("zstd"))
	w.write(msgSent, sent{round: 1, streams: 4}.encode())
	w.write(msgError, encodeUint(codeNoSpace))
	w.flush()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := newFrameReader(bytes.NewReader(b))
		for range 20 {
			typ, p, err := rd.read()
			if err != nil {
				return
			}
			switch typ {
			case msgHello:
				decodeHello(p)
			case msgBase:
				if m, err := decodeBase(p); err == nil {
					if m2, err := decodeBase(m.encode()); err != nil || m2.version != m.version {
						t.Fatal("base does not round-trip")
					}
				}
			case msgWant:
				decodeWant(p)
			case msgChunk:
				decodeChunk(p)
			case msgChunks:
				decodeChunks(p)
			case msgSent:
				decodeSent(p)
			case msgError:
				decodeError(p)
			case msgIndex:
				if _, b, err := decodeIndexMsg(p); err == nil {
					(&chunk.Index{}).UnmarshalBinary(b)
				}
			}
		}
	})
}

// FuzzDecodeHandshake: the candidates, base and committed messages of
// protocol 2 decode without panicking and encode back to what they were.
func FuzzDecodeHandshake(f *testing.F) {
	f.Add(byte(0), candidates{force: true, digests: []repo.Digest{{1}, {2}}}.encode())
	f.Add(byte(1), base{version: 4, digest: repo.Digest{4}, images: []imageRef{{name: "disk", digest: chunk.ID{5}}}, head: repo.Digest{6}, session: token{7}}.encode())
	f.Add(byte(2), committed{version: 9, head: repo.Digest{9}, diverged: true}.encode())
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		switch kind % 3 {
		case 0:
			m, err := decodeCandidates(b)
			if err != nil {
				return
			}
			if m2, err := decodeCandidates(m.encode()); err != nil || m2.force != m.force || !slices.Equal(m2.digests, m.digests) {
				t.Fatalf("candidates re-decode: %v", err)
			}
		case 1:
			m, err := decodeBase(b)
			if err != nil {
				return
			}
			if m2, err := decodeBase(m.encode()); err != nil || m2.digest != m.digest || m2.head != m.head || m2.version != m.version ||
				!slices.Equal(m2.images, m.images) || m2.session != m.session {
				t.Fatalf("base re-decode: %v", err)
			}
		case 2:
			m, err := decodeCommitted(b)
			if err != nil {
				return
			}
			if m2, err := decodeCommitted(m.encode()); err != nil || m2 != m {
				t.Fatalf("committed re-decode: %v", err)
			}
		}
	})
}

// TestFrameCutShort: a frame whose stream ends under it is malformed when
// the peer closed the stream there (EOF), and the stream's own error when
// it was reset or the connection went (a sender stopped with Ctrl-C): the
// receiver then logs why, not "malformed frame".
func TestFrameCutShort(t *testing.T) {
	frame := append([]byte{msgChunk}, binary.AppendUvarint(nil, 1000)...)
	frame = append(frame, make([]byte, 100)...)
	reset := errors.New("stream reset by peer")
	for _, tc := range []struct {
		name      string
		end       error
		malformed bool
	}{
		{"closed", io.EOF, true},
		{"reset", reset, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := newFrameReader(io.MultiReader(bytes.NewReader(frame), errReader{tc.end}))
			_, _, err := rd.read()
			if err == nil || errors.Is(err, ErrMalformed) != tc.malformed || (!tc.malformed && !errors.Is(err, reset)) {
				t.Errorf("frame cut by %v: %v (malformed %v, want %v)", tc.end, err, errors.Is(err, ErrMalformed), tc.malformed)
			}
		})
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
