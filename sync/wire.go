package sync

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/transport"
)

// Frame types. The values are part of the wire protocol: add, never renumber.
const (
	msgHello     = 1  // S→R on the control stream: magic, version, set name
	msgBase      = 2  // R→S: the version the receiver holds, and its images
	msgNeedIndex = 3  // S→R: send me the index of this base image
	msgIndex     = 4  // R→S: an encoded index
	msgOffer     = 5  // S→R: a new version, as a delta against the base
	msgWant      = 6  // R→S: bitmap over the offer's new chunks
	msgChunk     = 7  // S→R on a data stream: one chunk
	msgSent      = 8  // S→R: every wanted chunk of this round was sent
	msgCommitted = 9  // R→S: the version is committed
	msgError     = 10 // either way: an error code, then the connection ends
	msgOps       = 11 // S→R: edits of one image's entries (several per image)
	msgOfferEnd  = 12 // S→R: the offer is complete
	msgData      = 13 // S→R: first frame of a data stream: its round
	msgCandidate = 14 // S→R after hello: force flag, the sender's versions of the set
	msgChunks    = 15 // S→R on a data stream: chunks compressed together
	// 16 and 17 are a hand-off's msgResume and msgResumed (handoff.go),
	// 18 a heal's msgHeal (heal.go), 19 and 20 a status request's msgStatus
	// and msgSets (status.go).
)

// maxStreams bounds the data streams of one round.
const maxStreams = 64

const (
	helloMagic = "NTC-SYNC"
	// protocolVersion 2: versions have digests and parents; the base is
	// the newest version both sides hold. 3: data streams may carry
	// groups of chunks compressed together (msgChunks). 4: a receiver
	// may ask again for chunks its store holds damaged (msgHeal).
	protocolVersion = 4
	// minProtocolVersion is the oldest sender's protocol a receiver
	// serves: 3 only adds groups, which a protocol 2 sender never sends,
	// and 4 heals, which a receiver asks of senders of 4 only.
	minProtocolVersion = 2
	// maxFrame bounds any frame; an offer for a 16 TiB image at 16 KiB
	// chunks would exceed it, and is sent as several frames.
	maxFrame = 64 << 20
)

// ErrMalformed reports a frame that cannot be decoded.
var ErrMalformed = errors.New("malformed frame")

// frameWriter writes frames to a buffered stream.
type frameWriter struct {
	w   *bufio.Writer
	buf []byte
}

func newFrameWriter(w io.Writer) *frameWriter {
	return newFrameWriterSize(w, 256<<10)
}

func newFrameWriterSize(w io.Writer, size int) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, size)}
}

// write sends one frame: type, uvarint length, payload.
func (f *frameWriter) write(typ byte, payload []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := binary.PutUvarint(hdr[1:], uint64(len(payload)))
	if _, err := f.w.Write(hdr[:1+n]); err != nil {
		return err
	}
	_, err := f.w.Write(payload)
	return err
}

// write2 sends one frame whose payload is head followed by body.
func (f *frameWriter) write2(typ byte, head, body []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := binary.PutUvarint(hdr[1:], uint64(len(head)+len(body)))
	if _, err := f.w.Write(hdr[:1+n]); err != nil {
		return err
	}
	if _, err := f.w.Write(head); err != nil {
		return err
	}
	_, err := f.w.Write(body)
	return err
}

func (f *frameWriter) flush() error { return f.w.Flush() }

// frameReader reads frames from a stream. Its buffer grows as a frame's
// bytes arrive, never to the length a frame announces, so a peer pays in
// bytes sent for the memory it makes the reader hold.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	// limit bounds a frame's payload (maxFrame when 0).
	limit int
	// acct, if set, is charged for buf's capacity beyond the first
	// frameKeep bytes, and held records what was charged.
	acct *account
	held int64
}

// Growth of a frame reader's buffer: it starts at frameStep bytes, at most
// doubles while a frame's bytes arrive, and a buffer larger than frameKeep
// is dropped before the next frame.
const (
	frameStep = 64 << 10
	frameKeep = 256 << 10
)

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 256<<10)}
}

// newFrameReaderSize reads frames with a read buffer of size bytes.
func newFrameReaderSize(r io.Reader, size int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, size)}
}

// read returns the next frame; the payload is valid until the next read.
// A clean end of stream before a frame is io.EOF.
func (f *frameReader) read() (byte, []byte, error) {
	if cap(f.buf) > frameKeep {
		f.buf = nil
		f.acct.free(f.held)
		f.held = 0
	}
	typ, err := f.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(f.r)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: frame length: %w", ErrMalformed, unexpected(err))
	}
	limit := uint64(f.limit)
	if limit == 0 {
		limit = maxFrame
	}
	if n > limit {
		return 0, nil, fmt.Errorf("%w: frame type %d of %d bytes, limit %d", ErrMalformed, typ, n, limit)
	}
	f.buf = f.buf[:0]
	for uint64(len(f.buf)) < n {
		if len(f.buf) == cap(f.buf) {
			if err := f.grow(int(min(n, uint64(max(2*cap(f.buf), frameStep))))); err != nil {
				return 0, nil, err
			}
		}
		k, err := f.r.Read(f.buf[len(f.buf):min(uint64(cap(f.buf)), n)])
		f.buf = f.buf[:len(f.buf)+k]
		if err != nil && uint64(len(f.buf)) < n {
			if err != io.EOF {
				// A stall, or the stream or connection ended under the
				// frame (a sender stopped with Ctrl-C resets its
				// streams): not a malformed frame.
				return 0, nil, fmt.Errorf("frame type %d, %d of %d bytes: %w", typ, len(f.buf), n, err)
			}
			return 0, nil, fmt.Errorf("%w: frame type %d: %w", ErrMalformed, typ, unexpected(err))
		}
	}
	return typ, f.buf, nil
}

// grow gives buf a capacity of size, keeping its bytes, after charging
// the account for what the capacity adds past frameKeep.
func (f *frameReader) grow(size int) error {
	if over := int64(size-frameKeep) - f.held; over > 0 {
		if err := f.acct.reserve(over, "a frame"); err != nil {
			return err
		}
		if f.acct != nil {
			f.held += over
		}
	}
	b := make([]byte, len(f.buf), size)
	copy(b, f.buf)
	f.buf = b
	return nil
}

// release gives back what the reader's buffer holds of its account.
func (f *frameReader) release() {
	f.buf = nil
	f.acct.free(f.held)
	f.held = 0
}

// expect reads a frame of type want; an error frame becomes its error.
func (f *frameReader) expect(want byte) ([]byte, error) {
	typ, p, err := f.read()
	if err != nil {
		return nil, unexpected(err)
	}
	if typ == msgError {
		return nil, decodeError(p)
	}
	if typ != want {
		return nil, fmt.Errorf("%w: got frame type %d, want %d", ErrMalformed, typ, want)
	}
	return p, nil
}

// openControl opens a control stream on conn, cancelled when ctx ends
// (which unblocks its reads); done closes it.
func openControl(ctx context.Context, conn *transport.Conn) (_ *transport.Stream, done func(), _ error) {
	ctrl, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open control stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { ctrl.Cancel(transport.ErrShuttingDown) })
	return ctrl, func() { stop(); ctrl.Close() }, nil
}

// ask sends one request frame (typ, payload) on a new control stream of
// conn and returns the payload of the answer, a frame of type answer of at
// most limit bytes (0: maxFrame); an error frame becomes its error. what
// names the request in errors.
func ask(ctx context.Context, conn *transport.Conn, typ byte, payload []byte, answer byte, limit int, what string) ([]byte, error) {
	ctrl, done, err := openControl(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer done()
	w, rd := newFrameWriter(ctrl), newFrameReader(ctrl)
	rd.limit = limit
	if err := w.write(typ, payload); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := w.flush(); err != nil {
		return nil, ctxErr(ctx, err)
	}
	p, err := rd.expect(answer)
	if re := (*RemoteError)(nil); errors.As(err, &re) {
		return nil, err // the receiver's answer: why not
	}
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("waiting for %s: %w", what, err))
	}
	return p, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// enc builds a payload.
type enc struct{ b []byte }

func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *enc) str(s string)     { e.bytes([]byte(s)) }
func (e *enc) id(id chunk.ID)   { e.b = append(e.b, id[:]...) }
func (e *enc) u64(v uint64)     { e.b = binary.BigEndian.AppendUint64(e.b, v) }

// dec reads a payload; the first error sticks and later reads return zero.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (d *dec) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items that take at least min bytes each, and
// refuses counts the rest of the payload cannot hold.
func (d *dec) count(min int) int {
	v := d.uvarint()
	if d.err == nil && (v > math.MaxInt32 || v*uint64(max(min, 1)) > uint64(len(d.b))) {
		d.fail("count larger than the frame")
		return 0
	}
	return int(v)
}

func (d *dec) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("field longer than the frame")
		return nil
	}
	// A copy: the frame's buffer is reused for the next frame.
	p := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return p
}

func (d *dec) str(maxLen int) string {
	p := d.bytes()
	if len(p) > maxLen {
		d.fail("string too long")
		return ""
	}
	return string(p)
}

func (d *dec) id() chunk.ID {
	var id chunk.ID
	if d.err != nil {
		return id
	}
	if len(d.b) < len(id) {
		d.fail("short chunk id")
		return id
	}
	copy(id[:], d.b)
	d.b = d.b[len(id):]
	return id
}

func (d *dec) u64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail("short integer")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// done reports the first error, or trailing bytes.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}
