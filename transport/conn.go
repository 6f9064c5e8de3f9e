package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// A Conn is a QUIC connection to a peer whose ID was verified in the
// handshake. It carries any number of streams. Its methods are safe for
// concurrent use; errors match this package's conditions (see [MapError]).
type Conn struct {
	qc   *quic.Conn
	peer ID
	bufs UDPBuffers

	// A dialled Conn owns its socket and quic-go transport; an accepted
	// one shares its Listener's.
	tr  *quic.Transport
	udp *net.UDPConn
	// onClose tells an accepting Listener that the Conn is closed.
	onClose func()

	closeOnce sync.Once
	closeErr  error

	// ended holds why the connection ended, as a stream operation learned
	// it: quic-go returns that error slightly before its context is done.
	ended atomic.Pointer[error]
}

// noteEnded records err if the connection (not just ctx) ended.
func (c *Conn) noteEnded(ctx context.Context, err error) {
	if ctx.Err() == nil && err != nil {
		c.ended.CompareAndSwap(nil, &err)
	}
}

func newConn(qc *quic.Conn, bufs UDPBuffers) (*Conn, error) {
	peer, err := peerIDOf(qc.ConnectionState().TLS)
	if err != nil { // cannot happen: the handshake required a certificate
		_ = qc.CloseWithError(quic.ApplicationErrorCode(CodeInternal), CodeInternal.String())
		return nil, err
	}
	return &Conn{qc: qc, peer: peer, bufs: bufs}, nil
}

// PeerID returns the ID of the peer: verified, or (before [Conn.Confirm]
// returned) the one the handshake under way is verifying.
func (c *Conn) PeerID() ID { return c.peer }

// Confirm waits until the handshake is complete: the peer proved it holds
// the session's keys (so this is no replay of an earlier connection's first
// packets) and its identity was verified. It returns at once for a
// connection whose handshake ended before Dial or Accept returned. Call it
// before acting on data that may have arrived early (see
// [Config.Allow0RTT]) in any way that changes state.
func (c *Conn) Confirm(ctx context.Context) error {
	select {
	case <-c.qc.HandshakeComplete():
		return nil
	case <-c.qc.Context().Done():
		return fmt.Errorf("handshake with %s: %w", c.peer, MapError(context.Cause(c.qc.Context())))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry returns the connection to use after the server refused the early
// data of a dialled connection (its streams failed with
// [ErrEarlyDataRejected]): the same connection, with its handshake
// complete and no streams. c must not be used afterwards; closing the
// returned Conn releases everything.
func (c *Conn) Retry(ctx context.Context) (*Conn, error) {
	qc, err := c.qc.NextConnection(ctx)
	if err != nil {
		return nil, fmt.Errorf("connection to %s after its early data was refused: %w", c.peer, MapError(err))
	}
	return &Conn{qc: qc, peer: c.peer, bufs: c.bufs, tr: c.tr, udp: c.udp}, nil
}

// OpenStream opens a bidirectional stream, waiting while the peer's stream
// limit is reached. The peer's AcceptStream sees it once data (or a close)
// is sent on it.
func (c *Conn) OpenStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		err = MapError(err)
		c.noteEnded(ctx, err)
		return nil, fmt.Errorf("open stream to %s: %w", c.peer, err)
	}
	return &Stream{Stream: s}, nil
}

// AcceptStream waits for the next stream the peer opens.
func (c *Conn) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.AcceptStream(ctx)
	if err != nil {
		err = MapError(err)
		c.noteEnded(ctx, err)
		return nil, fmt.Errorf("accept stream from %s: %w", c.peer, err)
	}
	return &Stream{Stream: s}, nil
}

// Context is done when the connection is closed, by either side or a
// timeout; [Conn.Err] then says why.
func (c *Conn) Context() context.Context { return c.qc.Context() }

// Err returns nil while the connection is open and afterwards why it closed.
func (c *Conn) Err() error {
	ctx := c.qc.Context()
	if ctx.Err() == nil {
		if e := c.ended.Load(); e != nil {
			return *e
		}
		return nil
	}
	return MapError(context.Cause(ctx))
}

// Close closes the connection normally ([CodeNoError]) and, for a dialled
// connection, releases its socket. Call it even after the peer closed the
// connection. Close is idempotent.
func (c *Conn) Close() error { return c.CloseWithError(nil) }

// CloseWithError closes the connection with the code [CodeOf] gives for err
// (nil: a normal close). Only the code and its fixed name reach the peer,
// never err's text. Closing streams are cut off: to end cleanly, close the
// streams and wait for the peer to read them first.
func (c *Conn) CloseWithError(err error) error {
	c.closeOnce.Do(func() {
		code := CodeOf(err)
		// quic-go's CloseWithError returns once the CONNECTION_CLOSE is
		// sent; it returns no error.
		_ = c.qc.CloseWithError(quic.ApplicationErrorCode(code), code.String())
		if c.onClose != nil {
			c.onClose()
		}
		if c.tr != nil {
			if err := errors.Join(c.tr.Close(), c.udp.Close()); err != nil {
				c.closeErr = fmt.Errorf("close connection to %s: %w", c.peer, err)
			}
		}
	})
	return c.closeErr
}

// LocalAddr returns the local UDP address.
func (c *Conn) LocalAddr() net.Addr { return c.qc.LocalAddr() }

// RemoteAddr returns the peer's UDP address.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// UDPBuffers returns the sizes of the socket buffers under the connection.
func (c *Conn) UDPBuffers() UDPBuffers { return c.bufs }

// QUIC returns the quic-go connection, for what this type does not offer
// (unidirectional streams, datagrams, statistics). Its errors are not
// mapped: pass them through [MapError]. Close the Conn, not it.
func (c *Conn) QUIC() *quic.Conn { return c.qc }

// A Stream is a bidirectional QUIC stream whose Read, Write and Close
// errors are mapped with [MapError]. The embedded quic-go stream offers the
// rest (deadlines, CancelRead, CancelWrite, Context). Close ends only the
// sending side; Read returns [io.EOF] once the peer closed its side.
// Read and Write may be called from different goroutines.
type Stream struct {
	*quic.Stream
}

// Read reads data the peer sent on the stream.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if err != nil && err != io.EOF {
		err = MapError(err)
	}
	return n, err
}

// Write sends data on the stream.
func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	return n, MapError(err)
}

// Close ends the sending side: the peer reads [io.EOF] after the data
// written so far.
func (s *Stream) Close() error { return MapError(s.Stream.Close()) }

// Cancel abandons both directions of the stream, sending the code [CodeOf]
// gives for err. Data not yet delivered is discarded.
func (s *Stream) Cancel(err error) {
	code := quic.StreamErrorCode(CodeOf(err))
	s.CancelRead(code)
	s.CancelWrite(code)
}
