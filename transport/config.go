package transport

import (
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the application protocol both sides must offer in the TLS
// handshake. A peer that speaks another version fails to connect with an
// error matching [ErrVersionMismatch].
const ALPN = "ntc/1"

// Defaults for a [Config] field left zero. The windows cover the
// bandwidth-delay product of 1 Gbit/s at 100 ms RTT (12.5 MB) with room to
// spare; the connection window is twice the stream window so that one
// stalled stream cannot stop the others.
const (
	DefaultMaxStreamReceiveWindow     = 16 << 20
	DefaultMaxConnectionReceiveWindow = 32 << 20
	DefaultMaxIncomingStreams         = 100
	DefaultKeepAlivePeriod            = 10 * time.Second
	DefaultIdleTimeout                = 30 * time.Second
	DefaultHandshakeTimeout           = 10 * time.Second
)

// Config tunes a connection. The zero value is ready to use: each zero field
// takes its default. Both sides read their own Config; for the windows, each
// side's values limit what the other may send to it.
type Config struct {
	// MaxStreamReceiveWindow bounds how many bytes a peer may send on one
	// stream ahead of the reader (DefaultMaxStreamReceiveWindow). One stream
	// moves at most this much per round trip.
	MaxStreamReceiveWindow uint64
	// MaxConnectionReceiveWindow is the same bound for all streams of a
	// connection together (DefaultMaxConnectionReceiveWindow).
	MaxConnectionReceiveWindow uint64
	// InitialStreamReceiveWindow and InitialConnectionReceiveWindow are where
	// the windows start before quic-go's auto-tuning grows them toward the
	// maxima (zero: quic-go's default, 512 KiB).
	InitialStreamReceiveWindow     uint64
	InitialConnectionReceiveWindow uint64
	// MaxIncomingStreams is how many bidirectional streams the peer may have
	// open at once (DefaultMaxIncomingStreams).
	MaxIncomingStreams int64
	// KeepAlivePeriod is how often a packet is sent on an otherwise idle
	// connection, which keeps NAT bindings open (DefaultKeepAlivePeriod;
	// negative: never).
	KeepAlivePeriod time.Duration
	// IdleTimeout closes a connection that has heard nothing from the peer
	// for this long (DefaultIdleTimeout). The smaller of the two sides'
	// values applies.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the handshake (DefaultHandshakeTimeout), in
	// addition to the context passed to Dial.
	HandshakeTimeout time.Duration
	// Limits protect a listener from its clients (none when zero).
	Limits Limits
	// Sessions, when set, keeps the session tickets servers give: a later
	// Dial to the same server resumes the session (no certificates
	// exchanged; the same round trips).
	Sessions *SessionStore
	// EarlyData, with Sessions, lets the first streams' data leave with
	// the handshake (0-RTT) when the server allows it: one round trip
	// less. Dial's Conn then comes back before the handshake completed:
	// see [Conn.Confirm] and [ErrEarlyDataRejected]. quic-go v0.65 has a
	// data race between opening a stream on such a connection and the
	// handshake's end (quic-go issue 4303: the peer's transport parameters
	// are written without synchronisation; the race detector reports it),
	// so ntc does not use it yet.
	EarlyData bool
	// Allow0RTT lets a listener take data sent with the handshake by
	// clients resuming a session (a ticket it issued to a peer its allow
	// function still admits). [Listener.Accept] then returns such a
	// connection before its handshake is complete. Early data can be
	// replayed by anyone who recorded it: the application must act on it
	// only in ways that change nothing (answer a hello, compute what it
	// lacks), and call [Conn.Confirm] before anything else (store, commit,
	// start a guest).
	Allow0RTT bool
}

// quic returns the quic-go configuration for c.
func (c Config) quic() *quic.Config {
	def := func(v, d uint64) uint64 {
		if v == 0 {
			return d
		}
		return v
	}
	keepAlive := c.KeepAlivePeriod
	switch {
	case keepAlive == 0:
		keepAlive = DefaultKeepAlivePeriod
	case keepAlive < 0:
		keepAlive = 0
	}
	idle := c.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	handshake := c.HandshakeTimeout
	if handshake <= 0 {
		handshake = DefaultHandshakeTimeout
	}
	streams := c.MaxIncomingStreams
	if streams <= 0 {
		streams = DefaultMaxIncomingStreams
	}
	return &quic.Config{
		HandshakeIdleTimeout:           handshake,
		MaxIdleTimeout:                 idle,
		KeepAlivePeriod:                keepAlive,
		InitialStreamReceiveWindow:     c.InitialStreamReceiveWindow,
		MaxStreamReceiveWindow:         def(c.MaxStreamReceiveWindow, DefaultMaxStreamReceiveWindow),
		InitialConnectionReceiveWindow: c.InitialConnectionReceiveWindow,
		MaxConnectionReceiveWindow:     def(c.MaxConnectionReceiveWindow, DefaultMaxConnectionReceiveWindow),
		MaxIncomingStreams:             streams,
		Allow0RTT:                      c.Allow0RTT,
	}
}
