package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/quic-go/quic-go"
)

// Dial connects as the node id to the node peer at the UDP address addr
// (host:port). The server must present peer's certificate, or Dial fails
// with a [*PeerMismatchError]. ctx bounds the name lookup and the handshake.
//
// In TLS 1.3 the client finishes its handshake before the server has judged
// the client's certificate, so a server that refuses this node says so about
// one round trip after Dial returned: the Conn's stream operations then fail
// with an error matching [ErrPeerNotAllowed], as does [Conn.Err]. (Rarely the
// refusal wins the race and Dial itself returns that error.)
//
// With cfg.Sessions holding a ticket from peer, Dial resumes that session.
// With cfg.EarlyData too, and a ticket that allows it, Dial returns as soon
// as the first packet is sent: what the first streams carry then leaves
// with the handshake (0-RTT). The server's identity is confirmed with the
// handshake; a server that refuses the early data makes the streams fail
// with [ErrEarlyDataRejected], and [Conn.Retry] gives the connection to
// send them again on.
func Dial(ctx context.Context, addr string, id *Identity, peer ID, cfg Config) (*Conn, error) {
	if id == nil || peer.IsZero() {
		return nil, fmt.Errorf("dial %s: an identity and the peer's ID are required", addr)
	}
	tlsConf := clientTLS(id, peer)
	if cfg.Sessions != nil {
		tlsConf.ClientSessionCache = cfg.Sessions.cache(id.ID(), peer)
	}
	return dial(ctx, addr, tlsConf, id.statelessResetKey(), cfg, peer)
}

func dial(ctx context.Context, addr string, tlsConf *tls.Config, resetKey *quic.StatelessResetKey, cfg Config, peer ID) (*Conn, error) {
	raddr, err := resolveUDPAddr(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	network, laddr := localUDPAddrFor(raddr)
	udp, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	bufs := growUDPBuffers(udp)
	tr := &quic.Transport{Conn: udp, StatelessResetKey: resetKey}
	var qc *quic.Conn
	if tlsConf.ClientSessionCache != nil && cfg.EarlyData {
		qc, err = tr.DialEarly(ctx, raddr, tlsConf, cfg.quic())
	} else {
		qc, err = tr.Dial(ctx, raddr, tlsConf, cfg.quic())
	}
	if err != nil {
		if mismatch, ok := errors.AsType[*PeerMismatchError](err); ok {
			err = mismatch // the TLS alert it caused adds nothing for a reader
		}
		if errors.As(err, new(*quic.IdleTimeoutError)) || errors.As(err, new(*quic.HandshakeTimeoutError)) {
			err = fmt.Errorf("%w (%w)", ErrNoAnswer, err)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, errors.Join(MapError(err), tr.Close(), udp.Close()))
	}
	// Before the handshake completes the server's certificate is not
	// known yet: the pin stands for it, and a server that is not peer
	// fails the handshake (clientTLS).
	c := &Conn{qc: qc, peer: peer, bufs: bufs, tr: tr, udp: udp}
	return c, nil
}

// resolveUDPAddr resolves host:port, honouring ctx during name lookups.
func resolveUDPAddr(ctx context.Context, addr string) (*net.UDPAddr, error) {
	host, portName, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		return nil, errors.New("missing host")
	}
	port, err := net.DefaultResolver.LookupPort(ctx, "udp", portName)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("no address for %s", host)
		}
		ip = ips[0]
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(port))), nil
}

// localUDPAddrFor returns where to bind the socket for dialling raddr: any
// address of its family, or loopback if raddr is loopback.
func localUDPAddrFor(raddr *net.UDPAddr) (network string, laddr *net.UDPAddr) {
	if raddr.IP.To4() != nil {
		if raddr.IP.IsLoopback() {
			return "udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
		}
		return "udp4", nil
	}
	if raddr.IP.IsLoopback() {
		return "udp6", &net.UDPAddr{IP: net.IPv6loopback}
	}
	return "udp6", nil
}
