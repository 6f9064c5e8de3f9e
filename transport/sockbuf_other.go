//go:build !linux

package transport

import "net"

// inspectUDPBuffers cannot tell the sizes here.
func inspectUDPBuffers(*net.UDPConn) UDPBuffers { return UDPBuffers{} }

func forceUDPBuffers(*net.UDPConn, int) {}
