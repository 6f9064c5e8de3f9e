package capture

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"
)

// monitor is the QMP wire under a Session: the small client below (the
// default) or, built with -tags goqemu, go-qemu's SocketMonitor
// (monitor_goqemu.go), whose replies race with its reader (see doc.go).
type monitor interface {
	// connect reads the greeting and negotiates capabilities.
	connect() (Version, error)
	// run sends one command (with f passed by SCM_RIGHTS if not nil) and
	// returns the reply line; QEMU's error replies are *replyError, any
	// other error means the connection is gone.
	run(cmd []byte, f *os.File) ([]byte, error)
	// events delivers events until the connection ends, then is closed.
	events() <-chan Event
	disconnect() error
}

// Version is QEMU's version from the QMP greeting.
type Version struct {
	QEMU struct {
		Major int `json:"major"`
		Minor int `json:"minor"`
		Micro int `json:"micro"`
	} `json:"qemu"`
	Package string `json:"package"`
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
}

// qmpCommand is a QMP command as go-qemu encodes it.
type qmpCommand = qmp.Command

// replyError is QEMU's error reply.
type replyError struct{ desc string }

func (e *replyError) Error() string { return e.desc }

// qmpLine is any line QEMU sends: greeting, reply or event.
type qmpLine struct {
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

func (l *qmpLine) event() Event {
	return Event{Name: l.Event, Data: l.Data, Time: time.Unix(l.Timestamp.Seconds, l.Timestamp.Microseconds*1000)}
}

// maxLine bounds one QMP line (a reply to query-qmp-schema is ≈200 KiB).
const maxLine = 64 << 20

// socketMonitor speaks QMP over a unix socket with the standard library.
type socketMonitor struct {
	c   *net.UnixConn
	r   *bufio.Reader
	mu  sync.Mutex // one command at a time
	rep chan []byte
	evs chan Event
	end chan struct{} // closed when the reader stops
	err error         // why the reader stopped; valid once end is closed
}

func dialMonitor(path string, timeout time.Duration) (*socketMonitor, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	return &socketMonitor{c: c.(*net.UnixConn), r: bufio.NewReaderSize(c, 64<<10),
		rep: make(chan []byte, 1), evs: make(chan Event, 256), end: make(chan struct{})}, nil
}

func (m *socketMonitor) readLine() (*qmpLine, []byte, error) {
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
	var l qmpLine
	if err := json.Unmarshal(buf, &l); err != nil {
		return nil, nil, fmt.Errorf("%w: %.80q is not JSON", ErrNotQMP, bytes.TrimSpace(buf))
	}
	return &l, buf, nil
}

func (m *socketMonitor) connect() (Version, error) {
	l, _, err := m.readLine()
	if err != nil {
		return Version{}, err
	}
	if l.QMP == nil {
		return Version{}, fmt.Errorf("%w: the first line is not a QMP greeting", ErrNotQMP)
	}
	v := l.QMP.Version
	if _, err := m.c.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return v, err
	}
	for {
		l, _, err := m.readLine()
		if err != nil {
			return v, err
		}
		if l.Event != "" {
			continue
		}
		if l.Error != nil {
			return v, fmt.Errorf("qmp_capabilities: %s", l.Error.Desc)
		}
		break
	}
	go m.read()
	return v, nil
}

// read sorts lines into replies and events until the connection ends.
func (m *socketMonitor) read() {
	defer close(m.evs)
	for {
		l, raw, err := m.readLine()
		if err != nil {
			m.err = err
			close(m.end)
			return
		}
		if l.Event != "" {
			m.evs <- l.event()
			continue
		}
		m.rep <- raw
	}
}

func (m *socketMonitor) run(cmd []byte, f *os.File) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cmd = append(cmd, '\n')
	var err error
	if f != nil {
		_, _, err = m.c.WriteMsgUnix(cmd, unix.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = m.c.Write(cmd)
	}
	if err != nil {
		return nil, err
	}
	select {
	case raw := <-m.rep:
		var l qmpLine
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, err
		}
		if l.Error != nil {
			return nil, &replyError{desc: l.Error.Desc}
		}
		return raw, nil
	case <-m.end:
		return nil, m.err
	}
}

func (m *socketMonitor) events() <-chan Event { return m.evs }

func (m *socketMonitor) disconnect() error { return m.c.Close() }
