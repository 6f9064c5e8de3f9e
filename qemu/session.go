package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// Sentinel errors for the conditions a caller may want to tell apart.
var (
	// ErrNotQMP: the socket does not speak QMP.
	ErrNotQMP = errors.New("not a QMP socket")
	// ErrQMPBusy: QEMU accepted the connection but another client holds its
	// QMP socket (QEMU serves one client at a time).
	ErrQMPBusy = errors.New("QMP socket held by another client")
	// ErrExited: the QEMU whose socket DialStarting waited for exited.
	ErrExited = errors.New("QEMU exited")
	// ErrDisconnected: the QMP connection ended (QEMU exited or closed it).
	ErrDisconnected = errors.New("QMP connection lost")
	// ErrNoSocket: nothing is at the QMP socket's path.
	ErrNoSocket = errors.New("no QMP socket")
)

// CommandError is QEMU's error reply to a QMP command.
type CommandError struct {
	Command string
	Desc    string // QEMU's description
}

func (e *CommandError) Error() string { return fmt.Sprintf("QMP %s: %s", e.Command, e.Desc) }

// Event is one QMP event.
type Event struct {
	Name string
	Data map[string]any
	// Time is QEMU's timestamp of the event.
	Time time.Time
}

// String returns the event's data field s as a string ("" if absent).
func (e Event) String(field string) string {
	s, _ := e.Data[field].(string)
	return s
}

// Default timeouts of a Session.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	// maxEvents bounds the events a Session keeps; older ones are dropped.
	maxEvents = 4096
)

// Session is one QMP connection to a QEMU. Every command takes a context
// and a timeout; events are read all the time into a log that waiters scan
// from a mark, so a command's reply never waits behind an unread event.
// Methods are safe for concurrent use, though QEMU answers one command at a
// time.
type Session struct {
	path    string
	mon     Monitor
	timeout time.Duration
	version Version
	peer    Process

	events *Backlog[Event] // ended when the connection has ended

	mu     sync.Mutex
	broken error // set when the session can no longer be used
}

// DialOptions tune Dial; the zero value uses the defaults.
type DialOptions struct {
	// ConnectTimeout bounds connecting and the QMP greeting.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each command (a context deadline that comes
	// sooner wins).
	CommandTimeout time.Duration
}

// Dial connects to the QMP unix socket at path, reads the greeting and
// negotiates capabilities. It identifies the QEMU process behind the socket
// (SO_PEERCRED) first, so that a silent socket can be told apart: a QEMU
// whose QMP another client holds (ErrQMPBusy) or something else (ErrNotQMP).
func Dial(ctx context.Context, path string, opts DialOptions) (*Session, error) {
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w at %s: start QEMU with -qmp unix:%s,server=on,wait=off", ErrNoSocket, path, path)
	case err != nil:
		return nil, fmt.Errorf("QMP socket %s: %w", path, err)
	case fi.Mode()&fs.ModeSocket == 0:
		return nil, fmt.Errorf("%s is a %s, not a unix socket: %w (give QEMU's -qmp unix: socket)", path, fileKind(fi.Mode()), ErrNotQMP)
	}
	peer, err := peerProcess(ctx, path, opts.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	mon, err := DialMonitor(path, opts.ConnectTimeout)
	if err != nil {
		return nil, fmt.Errorf("connect to QMP socket %s: %w", path, err)
	}
	connected := make(chan error, 1)
	go func() { connected <- mon.Connect() }()
	t := time.NewTimer(opts.ConnectTimeout)
	defer t.Stop()
	select {
	case err = <-connected:
	case <-t.C:
		mon.Disconnect()
		<-connected
		return nil, silentPeerError(path, peer, opts.ConnectTimeout)
	case <-ctx.Done():
		mon.Disconnect()
		<-connected
		return nil, fmt.Errorf("connect to QMP socket %s: %w", path, ctx.Err())
	}
	if err != nil {
		mon.Disconnect()
		if peer.IsQEMU() && !errors.Is(err, ErrNotQMP) {
			return nil, fmt.Errorf("QMP handshake with QEMU (pid %d) on %s: %w", peer.PID, path, err)
		}
		return nil, fmt.Errorf("%s (served by pid %d, %s) did not answer with a QMP greeting (%v): %w", path, peer.PID, peer.Name(), err, ErrNotQMP)
	}
	if mon.Version().QEMU.Major == 0 {
		mon.Disconnect()
		return nil, fmt.Errorf("%s (served by pid %d, %s) sent no QEMU version in its greeting: %w", path, peer.PID, peer.Name(), ErrNotQMP)
	}
	return NewSession(mon, path, mon.Version(), peer, opts.CommandTimeout)
}

// NewSession makes a Session of mon, connected to the QEMU process peer
// (Dial does this for a QMP socket; capture's libvirt passthrough is
// another monitor). path names the target in messages, v is QEMU's
// version, and commandTimeout bounds each command (0: the default).
func NewSession(mon Monitor, path string, v Version, peer Process, commandTimeout time.Duration) (*Session, error) {
	if commandTimeout <= 0 {
		commandTimeout = DefaultCommandTimeout
	}
	evs, err := mon.Events(context.Background())
	if err != nil {
		return nil, fmt.Errorf("QMP events of %s: %w", path, err)
	}
	s := &Session{
		path: path, mon: mon, timeout: commandTimeout, version: v, peer: peer,
		events: NewBacklog[Event](maxEvents),
	}
	go s.pump(evs)
	return s, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	}
	return m.Type().String()
}

// silentPeerError explains a socket that accepted the connection but sent
// no greeting.
func silentPeerError(path string, peer Process, d time.Duration) error {
	if peer.IsQEMU() {
		return fmt.Errorf("QEMU (pid %d) accepted the connection on %s but sent no QMP greeting within %s: "+
			"another client holds its QMP socket (QEMU serves one at a time); disconnect it, or start QEMU with "+
			"a second -qmp socket for ntc: %w", peer.PID, path, d, ErrQMPBusy)
	}
	return fmt.Errorf("%s is served by pid %d (%s), which sent no QMP greeting within %s: %w (give QEMU's -qmp socket)",
		path, peer.PID, peer.Name(), d, ErrNotQMP)
}

// pump moves events from the monitor into the log as they come, so that
// the monitor's reader never blocks on an event nobody reads (go-qemu's
// event channel is unbuffered: an unread event stalls every reply).
func (s *Session) pump(evs <-chan qmp.Event) {
	for e := range evs {
		s.events.Add(Event{Name: e.Event, Data: e.Data, Time: time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)})
	}
	s.markBroken(ErrDisconnected)
	s.events.End(fmt.Errorf("wait for QMP event: %w (did QEMU exit?)", ErrDisconnected))
}

// Version returns the QEMU version from the greeting, like "7.2.22".
func (s *Session) Version() string { return s.version.String() }

// VersionAtLeast reports whether QEMU is at least major.minor.
func (s *Session) VersionAtLeast(major, minor int) bool {
	q := s.version.QEMU
	return q.Major > major || (q.Major == major && q.Minor >= minor)
}

// Package returns QEMU's package string from the greeting.
func (s *Session) Package() string { return s.version.Package }

// Peer returns the QEMU process behind the socket.
func (s *Session) Peer() Process { return s.peer }

// Monitor returns the wire under the session (for a caller that knows its
// kind, as capture does for a libvirt domain). A command sent on it
// directly has no timeout and may take another command's reply.
func (s *Session) Monitor() Monitor { return s.mon }

// Path returns the socket path.
func (s *Session) Path() string { return s.path }

// Done is closed when the connection has ended.
func (s *Session) Done() <-chan struct{} { return s.events.Ended() }

// Err returns why the session can no longer be used, or nil.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

// Close ends the connection.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.broken == nil {
		s.broken = errors.New("QMP session closed")
	}
	s.mu.Unlock()
	err := s.mon.Disconnect()
	<-s.events.Ended()
	return err
}

// Run executes a QMP command with args (nil for none, else anything that
// marshals to a JSON object) and decodes the reply's "return" value into
// reply (nil to ignore it). QEMU's error replies are *CommandError. If no
// reply comes within the command timeout or ctx ends, the session is
// closed, since a late reply would be taken for the next command's.
func (s *Session) Run(ctx context.Context, command string, args any, reply any) error {
	return s.run(ctx, command, args, reply, nil)
}

// RunWithFile is Run that passes f to QEMU with the command (SCM_RIGHTS),
// as getfd needs.
func (s *Session) RunWithFile(ctx context.Context, command string, args any, f *os.File) error {
	return s.run(ctx, command, args, nil, f)
}

func (s *Session) run(ctx context.Context, command string, args any, reply any, f *os.File) error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("QMP %s: %w", command, err)
	}
	b, err := json.Marshal(Command{Execute: command, Args: args})
	if err != nil {
		return fmt.Errorf("QMP %s: encode arguments: %w", command, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		if f != nil {
			r.out, r.err = s.mon.RunWithFile(b, f)
		} else {
			r.out, r.err = s.mon.Run(b)
		}
		ch <- r
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		s.mu.Lock()
		if s.broken == nil {
			s.broken = fmt.Errorf("no reply to %s: %w", command, ctx.Err())
		}
		s.mu.Unlock()
		s.mon.Disconnect()
		<-ch
		return fmt.Errorf("QMP %s: no reply: %w", command, ctx.Err())
	}
	if r.err != nil {
		return s.classify(command, r.err)
	}
	if reply == nil {
		return nil
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.out, &resp); err != nil {
		return fmt.Errorf("QMP %s: decode reply: %w", command, err)
	}
	if err := json.Unmarshal(resp.Return, reply); err != nil {
		return fmt.Errorf("QMP %s: decode reply %.200s: %w", command, resp.Return, err)
	}
	return nil
}

// classify turns a monitor error into a *CommandError (QEMU said no) or a
// lost connection.
func (s *Session) classify(command string, err error) error {
	var re *ReplyError
	if errors.As(err, &re) {
		return &CommandError{Command: command, Desc: re.Desc}
	}
	s.markBroken(ErrDisconnected)
	return fmt.Errorf("QMP %s: %w (did QEMU exit?): %v", command, ErrDisconnected, err)
}

func (s *Session) markBroken(err error) {
	s.mu.Lock()
	if s.broken == nil {
		s.broken = err
	}
	s.mu.Unlock()
}

// EventMark returns a mark for WaitEvent: only events received after it
// are considered.
func (s *Session) EventMark() int { return s.events.Mark() }

// WaitEvent waits for an event after mark from for which match is true and
// returns it with the mark just past it. It fails when ctx ends or the
// connection is lost.
func (s *Session) WaitEvent(ctx context.Context, from int, match func(Event) bool) (Event, int, error) {
	return s.events.Wait(ctx, from, match)
}

// DialStarting is Dial for a QEMU this program just started: QEMU
// announces its QMP socket no other way than by creating it, and the file
// exists from bind() on, before QEMU listens, when connecting is refused.
// So while the socket is missing or refuses, DialStarting tries again every
// 10 ms, until it connects, ctx ends, or exited is closed (the QEMU ended:
// ErrExited).
func DialStarting(ctx context.Context, path string, opts DialOptions, exited <-chan struct{}) (*Session, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s, err := Dial(ctx, path, opts)
		if err == nil || !(errors.Is(err, ErrNoSocket) || errors.Is(err, syscall.ECONNREFUSED)) {
			return s, err
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("QMP socket %s: %w", path, ErrExited)
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for QEMU's QMP socket %s: %w (last: %v)", path, ctx.Err(), err)
		case <-t.C:
		}
	}
}
