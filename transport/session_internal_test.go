package transport

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func FuzzDecodeTicketFile(f *testing.F) {
	f.Add(encodeTicketFile([]byte("ticket"), []byte("state")))
	f.Add(encodeTicketFile(bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 900)))
	f.Add([]byte(ticketMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		ticket, state, err := decodeTicketFile(b)
		if err != nil {
			return
		}
		if again := encodeTicketFile(ticket, state); !bytes.Equal(again, b) {
			t.Fatalf("decode then encode differs: %x, want %x", again, b)
		}
	})
}

func TestTicketFilePerPair(t *testing.T) {
	self, peer := ID{1}, ID{2}
	s := NewSessionStore(filepath.Join(t.TempDir(), "sessions"))
	if s.path(self, peer) == s.path(peer, self) || s.path(self, peer) == s.path(self, ID{3}) {
		t.Fatal("tickets of different (node, server) pairs share a file")
	}
	c := s.cache(self, peer).(*sessionCache)
	if err := writeTicketFile(c.dir, c.path, encodeTicketFile([]byte("t"), []byte("s"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(self, peer); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.path); !os.IsNotExist(err) {
		t.Errorf("Forget left the ticket: %v", err)
	}
}
