package capture

// The QMP session, its wire and the identity of a QEMU process live in
// package qemu. The names below keep capture's files (and its importers)
// compiling until they say qemu.X themselves; nothing here adds behaviour.

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/ntc-project/ntc/qemu"
)

type (
	// Event is qemu.Event.
	Event = qemu.Event
	// CommandError is qemu.CommandError.
	CommandError = qemu.CommandError
	// DialOptions is qemu.DialOptions.
	DialOptions = qemu.DialOptions
	// Process is qemu.Process.
	Process = qemu.Process
	// Version is qemu.Version.
	Version = qemu.Version
)

var (
	// ErrNotQMP is qemu.ErrNotQMP.
	ErrNotQMP = qemu.ErrNotQMP
	// ErrQMPBusy is qemu.ErrQMPBusy.
	ErrQMPBusy = qemu.ErrQMPBusy
	// ErrDisconnected is qemu.ErrDisconnected.
	ErrDisconnected = qemu.ErrDisconnected
)

// Default timeouts of a Session.
const (
	DefaultConnectTimeout = qemu.DefaultConnectTimeout
	DefaultCommandTimeout = qemu.DefaultCommandTimeout
)

// Session is a qemu.Session. It is a struct of capture's own, not an alias,
// only because DialDomain (libvirt.go) builds one from the fields below and
// starts it with pump; once it calls qemu.NewSession, Session becomes
// `= qemu.Session`.
type Session struct {
	once sync.Once
	qs   *qemu.Session

	// Set by DialDomain.
	path    string
	mon     monitor
	timeout time.Duration
	version Version
	peer    Process
	changed chan struct{}
	done    chan struct{}
}

// Dial is qemu.Dial.
func Dial(ctx context.Context, path string, opts DialOptions) (*Session, error) {
	qs, err := qemu.Dial(ctx, path, opts)
	if err != nil {
		return nil, err
	}
	s := &Session{qs: qs}
	s.once.Do(func() {})
	return s, nil
}

// pump starts the session of a monitor DialDomain connected.
func (s *Session) pump(<-chan Event) { s.session() }

// session returns the qemu.Session, making it of DialDomain's monitor the
// first time.
func (s *Session) session() *qemu.Session {
	s.once.Do(func() {
		// monitorWire's Events never fails, so neither does NewSession.
		s.qs, _ = qemu.NewSession(monitorWire{s.mon}, s.path, s.version, s.peer, s.timeout)
	})
	return s.qs
}

// Qemu returns the qemu.Session, for callers moving to package qemu.
func (s *Session) Qemu() *qemu.Session { return s.session() }

// Run is qemu.Session.Run.
func (s *Session) Run(ctx context.Context, command string, args any, reply any) error {
	return s.session().Run(ctx, command, args, reply)
}

// RunWithFile is qemu.Session.RunWithFile.
func (s *Session) RunWithFile(ctx context.Context, command string, args any, f *os.File) error {
	return s.session().RunWithFile(ctx, command, args, f)
}

// EventMark is qemu.Session.EventMark.
func (s *Session) EventMark() int { return s.session().EventMark() }

// WaitEvent is qemu.Session.WaitEvent.
func (s *Session) WaitEvent(ctx context.Context, from int, match func(Event) bool) (Event, int, error) {
	return s.session().WaitEvent(ctx, from, match)
}

// Version is qemu.Session.Version.
func (s *Session) Version() string { return s.session().Version() }

// VersionAtLeast is qemu.Session.VersionAtLeast.
func (s *Session) VersionAtLeast(major, minor int) bool {
	return s.session().VersionAtLeast(major, minor)
}

// Package is qemu.Session.Package.
func (s *Session) Package() string { return s.session().Package() }

// Peer is qemu.Session.Peer.
func (s *Session) Peer() Process { return s.session().Peer() }

// Path is qemu.Session.Path.
func (s *Session) Path() string { return s.session().Path() }

// Done is qemu.Session.Done.
func (s *Session) Done() <-chan struct{} { return s.session().Done() }

// Err is qemu.Session.Err.
func (s *Session) Err() error { return s.session().Err() }

// Close is qemu.Session.Close.
func (s *Session) Close() error { return s.session().Close() }

// monitor is the wire libvirt.go implements (libvirtMonitor).
type monitor interface {
	connect() (Version, error)
	run(cmd []byte, f *os.File) ([]byte, error)
	events() <-chan Event
	disconnect() error
}

// monitorWire makes a connected monitor a qemu.Monitor.
type monitorWire struct{ m monitor }

func (w monitorWire) Connect() error    { return nil }
func (w monitorWire) Disconnect() error { return w.m.disconnect() }

func (w monitorWire) Run(cmd []byte) ([]byte, error) { return w.RunWithFile(cmd, nil) }

func (w monitorWire) RunWithFile(cmd []byte, f *os.File) ([]byte, error) {
	out, err := w.m.run(cmd, f)
	var re *replyError
	if errors.As(err, &re) {
		return nil, &qemu.ReplyError{Desc: re.desc}
	}
	return out, err
}

func (w monitorWire) Events(context.Context) (<-chan qmp.Event, error) {
	out := make(chan qmp.Event)
	go func() {
		defer close(out)
		for e := range w.m.events() {
			ev := qmp.Event{Event: e.Name, Data: e.Data}
			ev.Timestamp.Seconds, ev.Timestamp.Microseconds = e.Time.Unix(), int64(e.Time.Nanosecond()/1000)
			out <- ev
		}
	}()
	return out, nil
}

// replyError is QEMU's error reply as libvirtMonitor returns it.
type replyError struct{ desc string }

func (e *replyError) Error() string { return e.desc }

// qmpLine is the part of a QMP reply line libvirt.go reads.
type qmpLine struct {
	Error *struct{ Class, Desc string } `json:"error"`
}

// qmpCommand is qemu.Command.
type qmpCommand = qemu.Command

// processInfo is qemu.LookupProcess.
func processInfo(pid int) (Process, error) { return qemu.LookupProcess(pid) }

// processArgv is qemu.Cmdline.
func processArgv(pid int) ([]string, error) { return qemu.Cmdline(pid) }
