package main

import (
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/ntc-project/ntc/transport"
)

// TestNewSender: every command's Sender is this node's, keeps its state
// where asked, dials, and sends as push.streams, push.conns and
// push.bwlimit say (push.conns defaults to defaultConns; the others to the
// library's defaults); a rate that is not one is a usage error.
func TestNewSender(t *testing.T) {
	home := t.TempDir()
	id, _, err := transport.LoadOrCreateIdentity(home)
	if err != nil {
		t.Fatal(err)
	}
	to, err := transport.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		set          map[string]any
		streams      int
		conns        int
		bytesPerSec  int64
		usageFailure bool
	}{
		{name: "nothing set", conns: defaultConns},
		{name: "all set", set: map[string]any{"push.streams": 2, "push.conns": 3, "push.bwlimit": "20Mbit"},
			streams: 2, conns: 3, bytesPerSec: 2_500_000},
		{name: "bytes per second", set: map[string]any{"push.bwlimit": "2.5MB/s"}, conns: defaultConns, bytesPerSec: 2_500_000},
		{name: "not a rate", set: map[string]any{"push.bwlimit": "fast"}, usageFailure: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGlobals(io.Discard, io.Discard)
			g.v.Set("home", home)
			for k, v := range tc.set {
				g.v.Set(k, v)
			}
			dir := filepath.Join(t.TempDir(), "repo")
			s, err := g.newSender(peerAddr("127.0.0.1:1", to.ID()), dir)
			if tc.usageFailure {
				if !errors.As(err, new(usageError)) {
					t.Fatalf("newSender = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Node != id.ID().String() || s.StateDir != dir || s.Dial == nil || s.Logger != nil {
				t.Errorf("sender of node %s in %s (dial set: %v, logger %v), want node %s in %s, a dial, no logger without --verbose",
					s.Node, s.StateDir, s.Dial != nil, s.Logger, id.ID(), dir)
			}
			if s.Streams != tc.streams || s.Conns != tc.conns || s.BytesPerSec != tc.bytesPerSec {
				t.Errorf("streams %d, conns %d, %d B/s; want %d, %d, %d", s.Streams, s.Conns, s.BytesPerSec, tc.streams, tc.conns, tc.bytesPerSec)
			}
		})
	}
}
