package transport

import (
	"context"
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"
)

// A Code is an application error code: it travels in QUIC CONNECTION_CLOSE
// frames (closing a connection) and in RESET_STREAM and STOP_SENDING frames
// (cancelling a stream). The values are part of the wire protocol: add new
// ones, never renumber.
type Code uint64

// The wire error codes.
const (
	CodeNoError           Code = 0x0 // normal close: ErrClosed
	CodeInternal          Code = 0x1 // the sender failed: ErrInternal
	CodeShuttingDown      Code = 0x2 // the sender is going away: ErrShuttingDown
	CodePeerNotAllowed    Code = 0x3 // the receiver's ID is not allowed: ErrPeerNotAllowed
	CodeProtocolViolation Code = 0x4 // malformed or unexpected message: ErrProtocol
	CodeVersionMismatch   Code = 0x5 // no protocol version in common: ErrVersionMismatch
	CodeConnLimit         Code = 0x6 // the peer holds too many connections: ErrConnLimit
)

// The conditions the codes stand for. Errors from a [Conn] or [Stream] match
// them with [errors.Is], whichever side sent the code; pass them (or errors
// wrapping them) to [Conn.CloseWithError] or [Stream.Cancel] to send one.
var (
	ErrClosed          = errors.New("closed")
	ErrInternal        = errors.New("internal error")
	ErrShuttingDown    = errors.New("shutting down")
	ErrPeerNotAllowed  = errors.New("peer not allowed")
	ErrProtocol        = errors.New("protocol violation")
	ErrVersionMismatch = errors.New("protocol version mismatch")
	ErrConnLimit       = errors.New("too many connections from this peer")
	// ErrNoAnswer: nothing answered the handshake (nothing listens at the
	// address, or UDP does not get through).
	ErrNoAnswer = errors.New("no answer from the peer")
)

// wireCodes is the one table between codes and conditions. [CodeOf] takes
// the first row whose condition matches, so the more specific come first.
var wireCodes = [...]struct {
	code Code
	err  error
}{
	{CodePeerNotAllowed, ErrPeerNotAllowed},
	{CodeVersionMismatch, ErrVersionMismatch},
	{CodeConnLimit, ErrConnLimit},
	{CodeProtocolViolation, ErrProtocol},
	{CodeShuttingDown, ErrShuttingDown},
	{CodeInternal, ErrInternal},
	{CodeNoError, ErrClosed},
}

// TLS alerts that the handshake turns into QUIC CRYPTO_ERROR codes
// (0x100 + alert, RFC 9001 section 4.8).
const (
	cryptoErrorBase            = 0x100
	alertBadCertificate        = 42  // crypto/tls sends it when VerifyConnection refuses the peer
	alertCertificateRequired   = 116 // the client sent no certificate
	alertNoApplicationProtocol = 120 // no ALPN in common
)

// Err returns the condition c stands for, or nil for a code this version
// does not know.
func (c Code) Err() error {
	for _, w := range wireCodes {
		if w.code == c {
			return w.err
		}
	}
	return nil
}

// String names the code. It is also the reason phrase sent with it: a fixed
// text, never an error message.
func (c Code) String() string {
	if err := c.Err(); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("unknown error code %#x", uint64(c))
}

// CodeOf returns the code to send for err: the code of the first condition
// err matches, [CodeNoError] for nil, [CodeShuttingDown] for
// [context.Canceled] (this node is giving up), and [CodeInternal] for
// anything else. Only the code reaches the peer, never err's text.
func CodeOf(err error) Code {
	if err == nil {
		return CodeNoError
	}
	for _, w := range wireCodes {
		if errors.Is(err, w.err) {
			return w.code
		}
	}
	if errors.Is(err, context.Canceled) {
		return CodeShuttingDown
	}
	return CodeInternal
}

// A WireError is a code that ended a connection or a stream, sent by the
// peer (Remote) or by this node. [errors.Is] matches it against the condition
// of its Code; [errors.As] still finds the quic-go error it was mapped from.
// Its text never includes the peer's reason phrase.
type WireError struct {
	Code   Code
	Remote bool // the peer sent the code
	Stream bool // only a stream was cancelled, not the connection
	err    error
}

func (e *WireError) Error() string {
	what := "connection"
	if e.Stream {
		what = "stream"
	}
	switch {
	case e.Remote && !e.Stream && e.Code == CodePeerNotAllowed:
		return "peer refused the connection: peer not allowed (this node's ID is not on its allow-list)"
	case e.Remote && e.Code == CodeNoError:
		return "peer closed the " + what
	case e.Remote && e.Stream:
		return "peer reset the stream: " + e.Code.String()
	case e.Remote:
		return "peer closed the connection: " + e.Code.String()
	case e.Code == CodeNoError:
		return what + " closed"
	default:
		return what + " closed: " + e.Code.String()
	}
}

// Is reports whether target is the condition of e.Code.
func (e *WireError) Is(target error) bool {
	cond := e.Code.Err()
	return cond != nil && target == cond
}

// Unwrap returns the quic-go error e was mapped from.
func (e *WireError) Unwrap() error { return e.err }

// MapError turns an error from quic-go into one that matches this package's
// conditions: application and stream error codes become a [*WireError], and
// so do the TLS alerts that mean the peer refused this node's certificate
// ([ErrPeerNotAllowed]) or shares no ALPN with it ([ErrVersionMismatch]).
// Other errors, nil, and errors already mapped are returned as they are.
// Call it on errors straight from quic-go, before adding context. [Conn] and
// [Stream] already do.
func MapError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*WireError](err); ok {
		return err
	}
	if e, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return &WireError{Code: Code(e.ErrorCode), Remote: e.Remote, err: err}
	}
	if e, ok := errors.AsType[*quic.StreamError](err); ok {
		return &WireError{Code: Code(e.ErrorCode), Remote: e.Remote, Stream: true, err: err}
	}
	if e, ok := errors.AsType[*quic.TransportError](err); ok && e.ErrorCode.IsCryptoError() {
		switch e.ErrorCode - cryptoErrorBase {
		case alertBadCertificate, alertCertificateRequired:
			if e.Remote { // locally these mean this node refused the peer
				return &WireError{Code: CodePeerNotAllowed, Remote: true, err: err}
			}
		case alertNoApplicationProtocol:
			return &WireError{Code: CodeVersionMismatch, Remote: e.Remote, err: err}
		}
	}
	return err
}

// A PeerMismatchError reports that the dialled node presented another ID
// than the one pinned for it. The connection is refused.
type PeerMismatchError struct {
	Want, Got ID
}

func (e *PeerMismatchError) Error() string {
	return fmt.Sprintf("peer has ID %s, but %s was expected: check the pinned ID and the address", e.Got, e.Want)
}
