// Package transport connects ntc nodes to each other: node identities,
// mutually authenticated QUIC connections between them, their streams, and
// the error codes that cross the wire.
//
// # Vocabulary
//
//   - Node: one ntc process with a state directory. The sender of
//     checkpoints dials; the receiver listens.
//   - Identity: a node's Ed25519 private key and the self-signed certificate
//     for it, kept in the state directory (mode 0700) as [KeyFile] (mode
//     0600: a key others may read is refused) and [CertFile]. [LoadOrCreateIdentity] creates them when
//     they are missing; [LoadIdentity] only loads them.
//   - ID: the SHA-256 of a node's certificate. It names the node and is what
//     peers pin. Its text form ([ID.String], [ParseID]) is base32 in groups
//     of seven with check characters, like a Syncthing device ID.
//   - Pin: the one ID a dialler accepts from the server ([Dial]). A wrong
//     server fails the handshake with a [*PeerMismatchError].
//   - Allow function: the listener's admission rule ([Listen], [AllowIDs]).
//     A refused client fails the handshake and never reaches
//     [Listener.Accept]; it sees an error matching [ErrPeerNotAllowed].
//   - Conn: one QUIC connection (TLS 1.3, ALPN [ALPN]) to a verified peer,
//     carrying many streams. Flow-control windows ([Config]) default to
//     sizes that keep a 1 Gbit/s, 100 ms path full.
//   - Stream: a bidirectional QUIC stream; Close ends only the sending side.
//   - Code: an application error code sent when closing a connection or
//     cancelling a stream. errors.go maps codes to the conditions ErrClosed,
//     ErrInternal, ErrShuttingDown, ErrPeerNotAllowed, ErrProtocol, ErrConnLimit and
//     ErrVersionMismatch in one table: [CodeOf] picks the code to send for an
//     error, [MapError] turns what arrives into a [*WireError] that
//     errors.Is matches against them. Only codes cross the wire, never the
//     text of an error, in either direction.
//
// # How a refusal looks
//
// The server judges the client's certificate after the client has already
// finished its TLS 1.3 handshake. So a refused client's [Dial] usually
// succeeds and its first stream operation fails; either way the error
// matches [ErrPeerNotAllowed]. The refused client never gets a stream to the
// server's application.
//
// # Limits
//
// A listener's [Limits] bound what its clients cost it: connection
// attempts per IP address (one over the rate is refused at its first
// packet, before any cryptography), a QUIC Retry (address validation)
// while many handshakes are in progress, and connections per peer and in
// all (one over is closed with [CodeConnLimit] after its handshake). Every
// refusal, and every peer the allow function refused, is reported with the
// client's address (and ID, once known) to Limits.Refused. A peer not
// allowed costs a full TLS handshake: its certificate arrives last.
//
// # UDP buffers
//
// quic-go wants 7 MiB socket buffers and logs a warning through the standard
// logger when it cannot get them. This package asks for them first (past the
// sysctl limits where the process has CAP_NET_ADMIN) and reports the result
// through [Listener.UDPBuffers] and [Conn.UDPBuffers] instead; where the
// buffers stay small it sets QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING in the
// process environment, unless the user set it, so that nothing is printed.
//
// # What it does not do
//
// It defines no messages: what travels on the streams (offers, chunks,
// acknowledgements, protocol versions inside ALPN ntc/1) belongs to package
// sync. It keeps no list of peers or addresses, does not retry or reconnect,
// does not discover peers or traverse NATs, and uses no certificate
// authorities, expiry or revocation: an ID is trusted exactly while a pin or
// an allow function names it. It never prints or logs.
//
// # Session resumption and 0-RTT
//
// Listeners issue TLS session tickets; a dialler with a [SessionStore]
// ([Config.Sessions]) keeps them (one file per node and server, mode 0600:
// a ticket is a secret) and resumes: no certificates are exchanged, the
// ticket carries the client's ID (sealed by the server's ticket keys, which
// never leave its memory), and the listener checks that ID against its
// allow function when the ticket comes back, before anything else, and
// crypto/tls checks it again. A peer removed from the allow function after
// its ticket was issued is refused as if it had no ticket.
//
// With [Config.Allow0RTT] a listener also takes the data a resuming client
// sends with its first packet (0-RTT), and [Listener.Accept] returns such a
// connection before its handshake completes. Early data can be replayed
// by anyone who recorded it, and its sender is not proven until the
// handshake completes: the application may only answer it in ways that
// change nothing (a hello, an offer, what it lacks), and must call
// [Conn.Confirm] before anything that does (storing, committing, starting
// a guest). A replayed handshake never completes, so Confirm fails. A
// dialler whose early data the server refused (it restarted and forgot its
// ticket keys, or takes no early data) sees [ErrEarlyDataRejected] on its
// streams and sends again on [Conn.Retry]. A dialler sends early data only
// with [Config.EarlyData] (see there for quic-go's data race).
package transport
