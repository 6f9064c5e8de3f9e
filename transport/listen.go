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
	ql   *quic.Listener
	tr   *quic.Transport
	udp  *net.UDPConn
	bufs UDPBuffers
	g    *guard

	mu     sync.Mutex
	closed bool
	conns  map[*Conn]struct{} // accepted and not yet closed

	closeOnce sync.Once
	closeErr  error
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
	ql, err := tr.Listen(serverTLS(id, allow, g), cfg.quic())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, errors.Join(err, tr.Close(), udp.Close()))
	}
	return &Listener{ql: ql, tr: tr, udp: udp, bufs: bufs, g: g, conns: make(map[*Conn]struct{})}, nil
}

// Accept waits for the next connection from an allowed peer within the
// listener's [Limits]. After [Listener.Close] it returns an error matching
// [net.ErrClosed].
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		qc, err := l.ql.Accept(ctx)
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
		err := l.ql.Close()
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
