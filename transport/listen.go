package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/quic-go/quic-go"
)

// A Listener accepts connections from the peers its allow function admits.
// Its methods are safe for concurrent use.
type Listener struct {
	ql quicListener
	// early, with Config.Allow0RTT, hands over the connections of the
	// EarlyListener once they may be accepted (see acceptEarly).
	early chan *quic.Conn
	done  chan struct{} // closed by Close
	wg    sync.WaitGroup
	tr    *quic.Transport
	udp   *net.UDPConn
	bufs  UDPBuffers
	g     *guard

	mu     sync.Mutex
	closed bool
	conns  map[*Conn]struct{} // accepted and not yet closed

	closeOnce sync.Once
	closeErr  error
}

// quicListener is what Listener uses of quic-go's Listener and
// EarlyListener.
type quicListener interface {
	Accept(context.Context) (*quic.Conn, error)
	Close() error
	Addr() net.Addr
}

// AllowIDs returns an allow function for [Listen] that admits exactly ids.
func AllowIDs(ids ...ID) func(ID) bool {
	set := make(map[ID]struct{}, len(ids))
	for _, id := range ids {
		set[id] = struct{}{}
	}
	return func(id ID) bool {
		_, ok := set[id]
		return ok
	}
}

// Listen listens for QUIC connections on the UDP address addr (host:port;
// port 0 picks a free one) as the node id. During each handshake allow is
// called with the client's ID, possibly from several goroutines at once; a
// client it refuses fails the handshake, never reaches [Listener.Accept],
// and gets an error matching [ErrPeerNotAllowed]. allow is the place to
// record refused IDs.
func Listen(addr string, id *Identity, allow func(ID) bool, cfg Config) (*Listener, error) {
	if id == nil || allow == nil {
		return nil, fmt.Errorf("listen on %s: an identity and an allow function are required", addr)
	}
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	bufs := growUDPBuffers(udp)
	g := newGuard(cfg.Limits)
	tr := &quic.Transport{Conn: udp, StatelessResetKey: id.statelessResetKey(), ConnContext: g.connContext}
	if cfg.Limits.RetryAbove > 0 {
		tr.VerifySourceAddress = g.verifySource
	}
	l := &Listener{tr: tr, udp: udp, bufs: bufs, g: g, conns: make(map[*Conn]struct{}), done: make(chan struct{})}
	if cfg.Allow0RTT {
		el, err := tr.ListenEarly(serverTLS(id, allow, g), cfg.quic())
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, errors.Join(err, tr.Close(), udp.Close()))
		}
		l.ql, l.early = el, make(chan *quic.Conn)
		l.wg.Go(func() { l.acceptEarly(el) })
		return l, nil
	}
	ql, err := tr.Listen(serverTLS(id, allow, g), cfg.quic())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, errors.Join(err, tr.Close(), udp.Close()))
	}
	l.ql = ql
	return l, nil
}

// acceptEarly takes the connections of el as quic-go hands them over,
// before their handshakes complete, and passes on to Accept those that
// resumed a session with early data at once (their client's ID came with
// its ticket, checked by the allow function) and the others once their
// handshake completed (their client's certificate checked). A handshake
// in progress never holds up another connection.
func (l *Listener) acceptEarly(el *quic.EarlyListener) {
	defer close(l.early)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		qc, err := el.Accept(context.Background())
		if err != nil {
			return // closed
		}
		wg.Go(func() {
			if !qc.ConnectionState().Used0RTT {
				select {
				case <-qc.HandshakeComplete():
				case <-qc.Context().Done():
					return
				case <-l.done:
					_ = qc.CloseWithError(quic.ApplicationErrorCode(CodeShuttingDown), CodeShuttingDown.String())
					return
				}
			}
			select {
			case l.early <- qc:
			case <-l.done:
				_ = qc.CloseWithError(quic.ApplicationErrorCode(CodeShuttingDown), CodeShuttingDown.String())
			}
		})
	}
}

// next returns the next connection to accept.
func (l *Listener) next(ctx context.Context) (*quic.Conn, error) {
	if l.early == nil {
		return l.ql.Accept(ctx)
	}
	select {
	case qc, ok := <-l.early:
		if !ok {
			return nil, net.ErrClosed
		}
		return qc, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Accept waits for the next connection from an allowed peer within the
// listener's [Limits]. After [Listener.Close] it returns an error matching
// [net.ErrClosed].
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		qc, err := l.next(ctx)
		if err != nil {
			return nil, fmt.Errorf("accept: %w", err)
		}
		handshakeDone(qc)
		c, err := newConn(qc, l.bufs)
		if err != nil {
			continue // newConn closed it; wait for the next
		}
		if !l.g.admit(c.peer) {
			l.g.refused(Refusal{Addr: qc.RemoteAddr(), Peer: c.peer, Err: ErrConnLimit})
			_ = c.CloseWithError(ErrConnLimit) // nothing to release: the socket is the Listener's
			continue
		}
		l.mu.Lock()
		closed := l.closed
		if !closed {
			l.conns[c] = struct{}{}
			c.onClose = func() {
				l.g.release(c.peer)
				l.mu.Lock()
				delete(l.conns, c)
				l.mu.Unlock()
			}
		} else {
			l.g.release(c.peer)
		}
		l.mu.Unlock()
		if closed {
			_ = c.CloseWithError(ErrShuttingDown) // nothing to release: the socket is the Listener's
			return nil, fmt.Errorf("accept: %w", net.ErrClosed)
		}
		return c, nil
	}
}

// Addr returns the local UDP address, with the port chosen.
func (l *Listener) Addr() net.Addr { return l.ql.Addr() }

// UDPBuffers returns the sizes of the listening socket's buffers.
func (l *Listener) UDPBuffers() UDPBuffers { return l.bufs }

// Close stops accepting, closes every accepted connection that is still
// open with [CodeShuttingDown] (peers see [ErrShuttingDown]), and releases
// the socket. Close is idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		err := l.ql.Close()
		l.wg.Wait()
		l.mu.Lock()
		l.closed = true
		conns := make([]*Conn, 0, len(l.conns))
		for c := range l.conns {
			conns = append(conns, c)
		}
		l.mu.Unlock()
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { _ = c.CloseWithError(ErrShuttingDown) }) // accepted Conns release nothing that can fail
		}
		wg.Wait()
		if err = errors.Join(err, l.tr.Close(), l.udp.Close()); err != nil {
			l.closeErr = fmt.Errorf("close listener: %w", err)
		}
	})
	return l.closeErr
}
