package transport

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/ntc-project/ntc/internal/ratelimit"
)

// Limits protect a [Listener] from the clients that reach it. The zero
// value sets no limit; dialling ignores them.
type Limits struct {
	// HandshakesPerSecond and HandshakeBurst bound the connection
	// attempts from one IP address. An attempt over them is refused at its
	// first packet, before any cryptography: the client sees the
	// connection refused. 0: no bound.
	HandshakesPerSecond float64
	HandshakeBurst      int
	// RetryAbove makes clients prove their address with a QUIC Retry (one
	// more round trip) while more than this many handshakes are in
	// progress, so that forged source addresses cannot spend the
	// handshakes of others. 0: never.
	RetryAbove int
	// ConnsPerPeer bounds the connections one peer (by ID) holds at once,
	// and MaxConns those of every peer together. A connection over either
	// is closed as soon as its handshake ends, with [CodeConnLimit]. 0: no
	// bound.
	ConnsPerPeer, MaxConns int
	// Refused, if set, is told about every refusal, from any goroutine:
	// handshakes over the rate, peers the allow function refused,
	// connections over a limit.
	Refused func(Refusal)
}

// A Refusal is a client the listener turned away.
type Refusal struct {
	Addr net.Addr
	// Peer is the client's ID; zero when it was refused before it
	// presented its certificate (over the handshake rate).
	Peer ID
	// Err matches ErrPeerNotAllowed, ErrHandshakeRate or ErrConnLimit.
	Err error
}

// ErrHandshakeRate reports a connection attempt refused because its
// address made too many (see [Limits]).
var ErrHandshakeRate = errors.New("too many connection attempts from this address")

// guard applies a Listener's Limits.
type guard struct {
	lim        Limits
	rate       *ratelimit.Keyed // nil: no rate limit
	handshakes atomic.Int64     // in progress

	mu    sync.Mutex
	conns map[ID]int
	total int
}

func newGuard(lim Limits) *guard {
	g := &guard{lim: lim, conns: map[ID]int{}}
	if lim.HandshakesPerSecond > 0 {
		g.rate = &ratelimit.Keyed{Rate: lim.HandshakesPerSecond, Burst: max(lim.HandshakeBurst, 1)}
	}
	return g
}

func (g *guard) refused(r Refusal) {
	if g.lim.Refused != nil {
		g.lim.Refused(r)
	}
}

// verifySource is quic.Transport.VerifySourceAddress: a Retry while
// handshakes crowd in.
func (g *guard) verifySource(net.Addr) bool {
	return g.lim.RetryAbove > 0 && g.handshakes.Load() >= int64(g.lim.RetryAbove)
}

type handshakeKey struct{}

// connContext is quic.Transport.ConnContext: it refuses an address over
// its rate, and counts the handshake until it ends (see handshakeDone).
func (g *guard) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	if g.rate != nil {
		key := info.RemoteAddr.String()
		if ua, ok := info.RemoteAddr.(*net.UDPAddr); ok {
			key = ua.IP.String()
		}
		if ok, _ := g.rate.Allow(key); !ok {
			g.refused(Refusal{Addr: info.RemoteAddr, Err: ErrHandshakeRate})
			return nil, ErrHandshakeRate
		}
	}
	g.handshakes.Add(1)
	var once sync.Once
	done := func() { once.Do(func() { g.handshakes.Add(-1) }) }
	context.AfterFunc(ctx, done) // a failed handshake, or the connection's end
	return context.WithValue(ctx, handshakeKey{}, done), nil
}

// handshakeDone stops counting qc's handshake.
func handshakeDone(qc *quic.Conn) {
	if done, ok := qc.Context().Value(handshakeKey{}).(func()); ok {
		done()
	}
}

// admit counts a new connection of peer, or refuses it; release uncounts.
func (g *guard) admit(peer ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lim.ConnsPerPeer > 0 && g.conns[peer] >= g.lim.ConnsPerPeer ||
		g.lim.MaxConns > 0 && g.total >= g.lim.MaxConns {
		return false
	}
	g.conns[peer]++
	g.total++
	return true
}

func (g *guard) release(peer ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns[peer]--; g.conns[peer] <= 0 {
		delete(g.conns, peer)
	}
	g.total--
}
