package capture

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/ntc-project/ntc/qemu"
)

// LibvirtConn is a connection to the local libvirt daemon.
type LibvirtConn struct {
	*libvirt.Libvirt
	URI    string
	dialer *unixDialer
}

// DialLibvirt connects to the local libvirt daemon at uri (qemu:///system
// or qemu:///session; "" for DefaultLibvirtURI), within timeout (0: the
// default connect timeout) or until ctx ends.
func DialLibvirt(ctx context.Context, uri string, timeout time.Duration) (*LibvirtConn, error) {
	uri = cmp.Or(uri, DefaultLibvirtURI)
	if timeout <= 0 {
		timeout = qemu.DefaultConnectTimeout
	}
	sock, err := libvirtSocket(uri)
	if err != nil {
		return nil, err
	}
	c := &LibvirtConn{URI: uri, dialer: &unixDialer{path: sock, timeout: timeout}}
	c.Libvirt = libvirt.NewWithDialer(c.dialer)
	done := make(chan error, 1)
	go func() { done <- c.ConnectToURI(libvirt.ConnectURI(uri)) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err = <-done:
	case <-t.C:
		c.dialer.close()
		<-done
		return nil, fmt.Errorf("libvirtd at %s did not answer within %s", uri, timeout)
	case <-ctx.Done():
		c.dialer.close()
		<-done
		return nil, fmt.Errorf("connect to libvirt at %s: %w", uri, ctx.Err())
	}
	if err != nil {
		c.dialer.close()
		return nil, fmt.Errorf("connect to libvirt at %s (%s): %w", uri, sock, err)
	}
	return c, nil
}

// Close hangs up.
func (c *LibvirtConn) Close() error {
	err := c.Disconnect()
	c.dialer.close()
	return err
}
