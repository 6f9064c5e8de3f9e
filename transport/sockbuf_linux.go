package transport

import (
	"net"

	"golang.org/x/sys/unix"
)

func inspectUDPBuffers(c *net.UDPConn) UDPBuffers {
	var b UDPBuffers
	raw, err := c.SyscallConn()
	if err != nil {
		return b
	}
	_ = raw.Control(func(fd uintptr) { // on error the sizes stay unknown
		b.Read, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		b.Write, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	return b
}

// forceUDPBuffers goes past the sysctl limits, which needs CAP_NET_ADMIN.
func forceUDPBuffers(c *net.UDPConn, size int) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { // without the capability this fails, as expected
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
	})
}
