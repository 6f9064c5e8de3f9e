package main

import (
	"cmp"
	"context"
	"path/filepath"

	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// dialer connects this node to its peers: the one place a command (push,
// sync, replicate, status, demo) dials.
type dialer struct {
	// id is this node's identity.
	id *transport.Identity
	// sessions, if set, keeps the TLS session tickets peers gave: each
	// connection resumes the last session with the same peer. Early data
	// (hello and offer in the first packet) waits for the receiver's
	// handshake confirmation and quic-go's fix (transport.Config.EarlyData).
	sessions *transport.SessionStore
}

// newDialer returns this node's dialer: its identity and session tickets
// in NTC_HOME (sessions/).
func (g *globals) newDialer() (*dialer, error) {
	id, err := transport.LoadIdentity(g.home())
	if err != nil {
		return nil, err
	}
	return &dialer{id: id, sessions: transport.NewSessionStore(filepath.Join(g.home(), "sessions"))}, nil
}

// dial returns what connects to p, pinned to p's ID. Its errors are
// transport.Dial's (they name the address; the caller says what for).
func (d *dialer) dial(p peer) func(context.Context) (*transport.Conn, error) {
	return func(ctx context.Context) (*transport.Conn, error) {
		return transport.Dial(ctx, p.Addr, d.id, p.ID, transport.Config{Sessions: d.sessions})
	}
}

// sendTuning is how a push sends: sync.Sender's Streams, Conns and
// BytesPerSec. The zero value is the library's defaults.
type sendTuning struct {
	streams, conns int
	bytesPerSec    int64
}

// defaultConns is push.conns when nothing sets it.
const defaultConns = 8

// pushTuning is how every command that pushes (push, sync, replicate)
// sends: push.streams, push.conns and push.bwlimit of the configuration
// (or push's flags).
func (g *globals) pushTuning() (sendTuning, error) {
	rate, err := parseRate(g.v.GetString("push.bwlimit"))
	if err != nil {
		return sendTuning{}, usagef("push.bwlimit: %v", err)
	}
	return sendTuning{streams: g.v.GetInt("push.streams"), conns: cmp.Or(g.v.GetInt("push.conns"), defaultConns), bytesPerSec: rate}, nil
}

// sender returns a Sender of this node's pushes to p, tuned by t, keeping
// what p acknowledged (and the versions it makes, package repo) in dir.
func (d *dialer) sender(p peer, dir string, t sendTuning) *ntcsync.Sender {
	return &ntcsync.Sender{StateDir: dir, Node: d.id.ID().String(), Dial: d.dial(p),
		Streams: t.streams, Conns: t.conns, BytesPerSec: t.bytesPerSec}
}

// newSender returns the Sender of a command's pushes to p: as this node
// (newDialer), tuned by push.* (pushTuning), logging what it does with
// --verbose, its state in dir.
func (g *globals) newSender(p peer, dir string) (*ntcsync.Sender, error) {
	t, err := g.pushTuning()
	if err != nil {
		return nil, err
	}
	d, err := g.newDialer()
	if err != nil {
		return nil, err
	}
	s := d.sender(p, dir, t)
	s.Logger = g.verboseLogger()
	return s, nil
}
