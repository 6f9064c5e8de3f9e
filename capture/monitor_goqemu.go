//go:build goqemu

package capture

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// maxReply is the longest QMP reply go-qemu reads (bufio.Scanner's
// default); a longer one ends the connection.
const maxReply = 64 << 10

// newMonitor connects the QMP wire through go-qemu's SocketMonitor. This
// build needs github.com/digitalocean/go-libvirt in go.sum (go-qemu's qmp
// package imports it): `go get github.com/digitalocean/go-qemu/qmp@v0.0.0-20250212194115-ee9b0668d242`.
func newMonitor(path string, timeout time.Duration) (monitor, error) {
	m, err := qmp.NewSocketMonitor("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	return &goqemuMonitor{m: m, evs: make(chan Event, 256)}, nil
}

// goqemuMonitor adapts go-qemu's SocketMonitor: events move from its
// unbuffered channel at once, and its errors are sorted into QEMU's error
// replies and lost connections.
type goqemuMonitor struct {
	m   *qmp.SocketMonitor
	evs chan Event
}

func (g *goqemuMonitor) connect() (Version, error) {
	if err := g.m.Connect(); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return Version{}, errors.Join(ErrNotQMP, err)
		}
		return Version{}, err
	}
	var v Version
	if g.m.Version != nil {
		v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro = g.m.Version.QEMU.Major, g.m.Version.QEMU.Minor, g.m.Version.QEMU.Micro
		v.Package = g.m.Version.Package
	}
	in, err := g.m.Events(nil)
	if err != nil {
		return v, err
	}
	go func() {
		defer close(g.evs)
		for e := range in {
			g.evs <- Event{Name: e.Event, Data: e.Data, Time: time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)}
		}
	}()
	return v, nil
}

// run maps go-qemu's errors: QEMU's error replies come back as plain
// errors carrying the description; a closed connection as a network error,
// an over-long line (bufio.ErrTooLong) or an empty reply (a JSON syntax
// error).
func (g *goqemuMonitor) run(cmd []byte, f *os.File) ([]byte, error) {
	var out []byte
	var err error
	if f != nil {
		out, err = g.m.RunWithFile(cmd, f)
	} else {
		out, err = g.m.Run(cmd)
	}
	if err == nil {
		return out, nil
	}
	var ne net.Error
	var se *json.SyntaxError
	if errors.As(err, &ne) || errors.As(err, &se) || errors.Is(err, bufio.ErrTooLong) || errors.Is(err, net.ErrClosed) {
		return nil, err
	}
	return nil, &replyError{desc: err.Error()}
}

func (g *goqemuMonitor) events() <-chan Event { return g.evs }

func (g *goqemuMonitor) disconnect() error { return g.m.Disconnect() }
