package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/ntc-project/ntc/transport"
)

func TestCodeRoundTrip(t *testing.T) {
	tests := []struct {
		code transport.Code
		cond error
	}{
		{transport.CodeNoError, transport.ErrClosed},
		{transport.CodeInternal, transport.ErrInternal},
		{transport.CodeShuttingDown, transport.ErrShuttingDown},
		{transport.CodePeerNotAllowed, transport.ErrPeerNotAllowed},
		{transport.CodeProtocolViolation, transport.ErrProtocol},
		{transport.CodeVersionMismatch, transport.ErrVersionMismatch},
		{transport.CodeConnLimit, transport.ErrConnLimit},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			if got := tt.code.Err(); got != tt.cond {
				t.Errorf("Err() = %v, want %v", got, tt.cond)
			}
			// Sending side: the condition, wrapped with context, gives the code.
			if got := transport.CodeOf(fmt.Errorf("read offer: %w", tt.cond)); got != tt.code {
				t.Errorf("CodeOf(wrapped %v) = %v, want %v", tt.cond, got, tt.code)
			}
			// Receiving side: what quic-go reports maps back to the condition.
			received := []error{
				&quic.ApplicationError{Remote: true, ErrorCode: quic.ApplicationErrorCode(tt.code), ErrorMessage: "peer text"},
				&quic.StreamError{Remote: true, ErrorCode: quic.StreamErrorCode(tt.code)},
			}
			for _, qerr := range received {
				err := transport.MapError(qerr)
				if !errors.Is(err, tt.cond) {
					t.Errorf("MapError(%v) = %v, does not match %v", qerr, err, tt.cond)
				}
				we, ok := errors.AsType[*transport.WireError](err)
				if !ok || we.Code != tt.code || !we.Remote {
					t.Errorf("MapError(%v) = %#v, want a remote WireError with code %v", qerr, err, tt.code)
				}
				if !errors.Is(err, qerr) {
					t.Errorf("MapError(%v) does not wrap the quic-go error", qerr)
				}
				if transport.CodeOf(err) != tt.code {
					t.Errorf("CodeOf(MapError(%v)) = %v, want %v", qerr, transport.CodeOf(err), tt.code)
				}
				if transport.MapError(err) != err {
					t.Error("MapError is not idempotent")
				}
			}
		})
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want transport.Code
	}{
		{"nil", nil, transport.CodeNoError},
		{"cancelled by the user", fmt.Errorf("push: %w", context.Canceled), transport.CodeShuttingDown},
		{"anything else", errors.New("disk full"), transport.CodeInternal},
		{"deadline", context.DeadlineExceeded, transport.CodeInternal},
		{"more specific first", errors.Join(transport.ErrInternal, transport.ErrPeerNotAllowed), transport.CodePeerNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transport.CodeOf(tt.err); got != tt.want {
				t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestMapError(t *testing.T) {
	const badCertificate, noALPN = 0x100 + 42, 0x100 + 120
	tests := []struct {
		name string
		in   error
		want error // a condition to match, or nil: in comes back unchanged
	}{
		{"server refused our certificate", &quic.TransportError{Remote: true, ErrorCode: badCertificate}, transport.ErrPeerNotAllowed},
		{"server wants a certificate", &quic.TransportError{Remote: true, ErrorCode: 0x100 + 116}, transport.ErrPeerNotAllowed},
		{"we refused the peer's certificate", &quic.TransportError{ErrorCode: badCertificate}, nil},
		{"no ALPN in common", &quic.TransportError{Remote: true, ErrorCode: noALPN}, transport.ErrVersionMismatch},
		{"other transport error", &quic.TransportError{Remote: true, ErrorCode: quic.FlowControlError}, nil},
		{"idle timeout", &quic.IdleTimeoutError{}, nil},
		{"EOF", io.EOF, nil},
		{"nil", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := transport.MapError(tt.in)
			if tt.want == nil {
				if got != tt.in {
					t.Fatalf("MapError(%v) = %v, want it unchanged", tt.in, got)
				}
				return
			}
			if !errors.Is(got, tt.want) || !errors.Is(got, tt.in) {
				t.Fatalf("MapError(%v) = %v, want it to match %v and wrap the original", tt.in, got, tt.want)
			}
		})
	}
}

func TestUnknownCode(t *testing.T) {
	const code = transport.Code(0x99)
	if code.Err() != nil {
		t.Errorf("Err() = %v, want nil", code.Err())
	}
	err := transport.MapError(&quic.ApplicationError{Remote: true, ErrorCode: 0x99})
	we, ok := errors.AsType[*transport.WireError](err)
	if !ok || we.Code != code {
		t.Fatalf("got %#v, want a WireError with code %v", err, code)
	}
	for _, cond := range []error{transport.ErrClosed, transport.ErrInternal, transport.ErrProtocol} {
		if errors.Is(err, cond) {
			t.Errorf("unknown code matches %v", cond)
		}
	}
	if !errors.Is(err, net.ErrClosed) {
		t.Error("a closed connection's error does not match net.ErrClosed")
	}
	t.Log(err)
}

func TestWireErrorNeverShowsPeerText(t *testing.T) {
	for _, remote := range []bool{true, false} {
		for _, code := range []transport.Code{transport.CodeNoError, transport.CodeProtocolViolation, transport.CodePeerNotAllowed, 0x99} {
			err := transport.MapError(&quic.ApplicationError{Remote: remote, ErrorCode: quic.ApplicationErrorCode(code), ErrorMessage: "\x1b[31mpeer text"})
			if msg := err.Error(); msg == "" || strings.Contains(msg, "peer text") || strings.Contains(msg, "\x1b") {
				t.Errorf("remote %v, code %v: message %q", remote, code, msg)
			}
		}
	}
}
