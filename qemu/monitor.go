package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"
)

// Monitor is the wire under a Session: go-qemu's qmp.Monitor, connected,
// that can also pass a file with a command (getfd needs it). QEMU's error
// replies come back from Run and RunWithFile as *ReplyError; any other
// error means the connection is gone. SocketMonitor is the one for QMP
// sockets; capture's libvirt passthrough is another.
type Monitor interface {
	qmp.Monitor
	RunWithFile(cmd []byte, f *os.File) ([]byte, error)
}

// Version is QEMU's version from the QMP greeting (go-qemu's type).
type Version = qmp.Version

// Command is a QMP command as go-qemu encodes it.
type Command = qmp.Command

// ReplyError is QEMU's error reply to a command, as a Monitor returns it.
// Session turns it into a *CommandError naming the command.
type ReplyError struct {
	Class string
	Desc  string
}

func (e *ReplyError) Error() string { return e.Desc }

// line is any line QEMU sends: greeting, reply or event.
type line struct {
	QMP *struct {
		Version      Version  `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
	Return    json.RawMessage               `json:"return"`
	Error     *struct{ Class, Desc string } `json:"error"`
	Event     string                        `json:"event"`
	Data      map[string]any                `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// maxLine bounds one QMP line (a reply to query-qmp-schema is ≈200 KiB;
// go-qemu's own SocketMonitor stops at 64 KiB, bufio.Scanner's default).
const maxLine = 64 << 20

// SocketMonitor speaks QMP over a connection to QEMU's -qmp socket. It is
// go-qemu's qmp.Monitor made safe: its reader copies each line before
// handing it on (go-qemu's SocketMonitor hands out replies that alias its
// bufio.Scanner's buffer, which the next line overwrites while the reply is
// being decoded, and ends the connection on a reply over 64 KiB), and it
// keeps up to 256 events when nobody reads them yet. go-qemu's command
// layer (qmp/raw, the qemu.Domain) runs on it as on go-qemu's own.
type SocketMonitor struct {
	c         net.Conn
	r         *bufio.Reader
	mu        sync.Mutex // one command at a time
	version   Version
	caps      []string
	rep       chan []byte
	evs       chan qmp.Event
	listening atomic.Bool
	end       chan struct{} // closed when the reader stops
	err       error         // why the reader stopped; valid once end is closed
}

var _ Monitor = (*SocketMonitor)(nil)

// DialMonitor connects to the QMP unix socket at path. Connect reads the
// greeting.
func DialMonitor(path string, timeout time.Duration) (*SocketMonitor, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	return NewSocketMonitor(c), nil
}

// NewSocketMonitor speaks QMP over c, a connection to QEMU's QMP socket
// (RunWithFile needs a *net.UnixConn).
func NewSocketMonitor(c net.Conn) *SocketMonitor {
	return &SocketMonitor{c: c, r: bufio.NewReaderSize(c, 64<<10),
		rep: make(chan []byte, 1), evs: make(chan qmp.Event, 256), end: make(chan struct{})}
}

// readLine reads one line into a buffer of its own.
func (m *SocketMonitor) readLine() (*line, []byte, error) {
	var buf []byte
	for {
		frag, err := m.r.ReadSlice('\n')
		buf = append(buf, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, nil, err
		}
		if len(buf) > maxLine {
			return nil, nil, fmt.Errorf("QMP line over %d bytes", maxLine)
		}
	}
	var l line
	if err := json.Unmarshal(buf, &l); err != nil {
		return nil, nil, fmt.Errorf("%w: %.80q is not JSON", ErrNotQMP, bytes.TrimSpace(buf))
	}
	return &l, buf, nil
}

// Connect reads the greeting and negotiates capabilities.
func (m *SocketMonitor) Connect() error {
	l, _, err := m.readLine()
	if err != nil {
		return err
	}
	if l.QMP == nil {
		return fmt.Errorf("%w: the first line is not a QMP greeting", ErrNotQMP)
	}
	m.version, m.caps = l.QMP.Version, l.QMP.Capabilities
	if _, err := m.c.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return err
	}
	for {
		l, _, err := m.readLine()
		if err != nil {
			return err
		}
		if l.Event != "" {
			continue
		}
		if l.Error != nil {
			return fmt.Errorf("qmp_capabilities: %s", l.Error.Desc)
		}
		break
	}
	go m.read()
	return nil
}

// Version returns QEMU's version from the greeting, once Connect returned.
func (m *SocketMonitor) Version() Version { return m.version }

// read sorts lines into replies and events until the connection ends.
func (m *SocketMonitor) read() {
	defer close(m.evs)
	for {
		l, raw, err := m.readLine()
		if err != nil {
			m.err = err
			close(m.end)
			return
		}
		if l.Event == "" {
			m.rep <- raw
			continue
		}
		if m.listening.Load() {
			ev := qmp.Event{Event: l.Event, Data: l.Data}
			ev.Timestamp.Seconds, ev.Timestamp.Microseconds = l.Timestamp.Seconds, l.Timestamp.Microseconds
			m.evs <- ev
		}
	}
}

// Events returns QEMU's events from now on; the channel is closed when the
// connection ends. The reader waits while 256 events are unread: read them
// all the time, as Session does.
func (m *SocketMonitor) Events(context.Context) (<-chan qmp.Event, error) {
	m.listening.Store(true)
	return m.evs, nil
}

// Run sends one command and returns QEMU's reply line.
func (m *SocketMonitor) Run(cmd []byte) ([]byte, error) { return m.RunWithFile(cmd, nil) }

// RunWithFile sends one command with f passed by SCM_RIGHTS (if not nil)
// and returns QEMU's reply line.
func (m *SocketMonitor) RunWithFile(cmd []byte, f *os.File) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cmd = append(bytes.TrimRight(cmd, "\n"), '\n')
	var err error
	if f != nil {
		uc, ok := m.c.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("passing a file takes a unix socket, not %T", m.c)
		}
		_, _, err = uc.WriteMsgUnix(cmd, unix.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = m.c.Write(cmd)
	}
	if err != nil {
		return nil, err
	}
	select {
	case raw := <-m.rep:
		var l line
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, err
		}
		if l.Error != nil {
			return nil, &ReplyError{Class: l.Error.Class, Desc: l.Error.Desc}
		}
		return raw, nil
	case <-m.end:
		return nil, m.err
	}
}

// Disconnect closes the connection.
func (m *SocketMonitor) Disconnect() error { return m.c.Close() }
