package transport

import (
	"crypto/tls"
	"errors"
	"net"
)

// errNoPeerCertificate is a handshake failure that never leaves this node.
var errNoPeerCertificate = errors.New("peer sent no certificate")

// serverTLS returns the TLS configuration of a listener: TLS 1.3, a client
// certificate required, and the client's ID checked against allow. A refused
// client gets a bad_certificate alert, which [MapError] turns into
// [ErrPeerNotAllowed] on its side; quic-go never hands its connection to
// [Listener.Accept].
func serverTLS(id *Identity, allow func(ID) bool, g *guard) *tls.Config {
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		NextProtos:   []string{ALPN},
		// Any certificate: the peer is judged by the hash of its
		// certificate below, not by a chain. TLS still checks that the
		// client holds the certificate's key.
		ClientAuth: tls.RequireAnyClientCert,
	}
	// A resumed session presents no certificate: its ticket carries the
	// client's ID, checked against allow when the ticket comes back, before
	// any early data is taken (session.go). crypto/tls then calls
	// VerifyConnection with the ticket's certificate too.
	t := newTicketer(allow)
	conf.WrapSession, conf.UnwrapSession = t.wrap, t.unwrap
	verify := func(addr net.Addr) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			peer, err := peerIDOf(cs)
			if err != nil {
				return err
			}
			if !allow(peer) {
				g.refused(Refusal{Addr: addr, Peer: peer, Err: ErrPeerNotAllowed})
				return ErrPeerNotAllowed
			}
			return nil
		}
	}
	conf.VerifyConnection = verify(nil)
	if g.lim.Refused != nil {
		// A refusal names the client's address, which only the
		// ClientHello knows.
		base := conf.Clone()
		conf.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			if chi.Conn != nil {
				c.VerifyConnection = verify(chi.Conn.RemoteAddr())
			}
			return c, nil
		}
	}
	return conf
}

// clientTLS returns the TLS configuration for dialling the node peer: TLS
// 1.3, this node's certificate offered, and the server's pinned.
func clientTLS(id *Identity, peer ID) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		NextProtos:   []string{ALPN},
		// The server's certificate is self-signed: there is no chain to
		// verify. VerifyConnection pins it by hash instead, and TLS checks
		// that the server holds its key.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := peerIDOf(cs)
			if err != nil {
				return err
			}
			if got != peer {
				return &PeerMismatchError{Want: peer, Got: got}
			}
			return nil
		},
	}
}

// peerIDOf returns the ID of the certificate the peer presented.
func peerIDOf(cs tls.ConnectionState) (ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return ID{}, errNoPeerCertificate
	}
	return idOf(cs.PeerCertificates[0].Raw), nil
}
