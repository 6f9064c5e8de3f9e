package transport

import (
	"net"
	"os"
)

// wantUDPBuffer is the kernel buffer size quic-go wants on its UDP socket.
// Bursts at high rates overflow smaller receive buffers and are lost.
const wantUDPBuffer = 7 << 20

// quicBufferWarningEnv, when unset, lets quic-go print a warning to the
// standard logger if it cannot get wantUDPBuffer.
const quicBufferWarningEnv = "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"

// UDPBuffers are the sizes of a UDP socket's kernel buffers in bytes, as the
// kernel reports them (Linux counts its bookkeeping too, reporting twice the
// size asked for). Zero means unknown.
type UDPBuffers struct {
	Read, Write int
}

// Sufficient reports whether both buffers are as large as quic-go wants for
// high rates. When they are not, raise the sysctls net.core.rmem_max and
// net.core.wmem_max to 7340032 or more, or give the process CAP_NET_ADMIN.
func (b UDPBuffers) Sufficient() bool {
	return b.Read >= wantUDPBuffer && b.Write >= wantUDPBuffer
}

// growUDPBuffers asks for wantUDPBuffer in both directions before quic-go
// does. Where that fails, quic-go would print a warning when it makes the
// same attempt; this package prints nothing and reports the sizes instead,
// so it turns the warning off through quic-go's environment variable, unless
// the user has set that variable.
func growUDPBuffers(c *net.UDPConn) UDPBuffers {
	// Errors are expected (the sizes are capped by the sysctls); what the
	// socket ends up with is checked below.
	_ = c.SetReadBuffer(wantUDPBuffer)
	_ = c.SetWriteBuffer(wantUDPBuffer)
	b := inspectUDPBuffers(c)
	if b.Read < wantUDPBuffer || b.Write < wantUDPBuffer {
		forceUDPBuffers(c, wantUDPBuffer)
		b = inspectUDPBuffers(c)
	}
	if !b.Sufficient() {
		if _, set := os.LookupEnv(quicBufferWarningEnv); !set {
			_ = os.Setenv(quicBufferWarningEnv, "true") // cannot fail for this name and value
		}
	}
	return b
}
