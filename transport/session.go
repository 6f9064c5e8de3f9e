package transport

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/quic-go/quic-go"
)

// ErrEarlyDataRejected is what the streams of a [Conn] dialled with a
// session ticket return when the server refused the data sent before the
// handshake completed (0-RTT): it forgot the ticket (it restarted, say) or
// takes no early data. Nothing of it reached the server's application; the
// connection itself went on: [Conn.Retry] returns it for the same requests
// again.
var ErrEarlyDataRejected = quic.Err0RTTRejected

// A SessionStore keeps the TLS session tickets a node's servers gave it,
// one per (this node, server) pair, in a directory: with one, [Dial]
// resumes the session (no certificates exchanged) and may send its first
// request with the handshake (0-RTT, see [Config.Allow0RTT]).
//
// A ticket is a secret: whoever holds it can resume the session as this
// node, until the server forgets its ticket keys (when it restarts, or
// after a day). The directory is made mode 0700 and each file 0600; a file
// others may read is not used. Files are replaced atomically but not
// synced: a ticket lost in a crash only costs a full handshake.
type SessionStore struct {
	dir string
}

// NewSessionStore keeps tickets in dir, created (mode 0700) at the first
// ticket.
func NewSessionStore(dir string) *SessionStore { return &SessionStore{dir: dir} }

// Forget removes the ticket of the server peer for this node self.
func (s *SessionStore) Forget(self, peer ID) error {
	if err := os.Remove(s.path(self, peer)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget session ticket: %w", err)
	}
	return nil
}

// path names the ticket file of self's session with peer: a ticket is only
// ever offered to the server that issued it, and only by the identity it
// was issued to.
func (s *SessionStore) path(self, peer ID) string {
	h := sha256.New()
	h.Write([]byte("ntc session ticket v1"))
	h.Write(self[:])
	h.Write(peer[:])
	return filepath.Join(s.dir, hex.EncodeToString(h.Sum(nil)[:16])+".ticket")
}

// cache returns the tls.ClientSessionCache for dialling peer as self.
func (s *SessionStore) cache(self, peer ID) tls.ClientSessionCache {
	return &sessionCache{path: s.path(self, peer), dir: s.dir}
}

// sessionCache is one ticket file. crypto/tls's key (the server name or
// address) is ignored: the file is already the (self, peer) pair's.
type sessionCache struct {
	path, dir string
}

func (c *sessionCache) Get(string) (*tls.ClientSessionState, bool) {
	f, err := os.Open(c.path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Mode().Perm()&0o077 != 0 || fi.Size() > maxTicketFile {
		return nil, false // readable by others: not trusted, rewritten at the next ticket
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, false
	}
	ticket, state, err := decodeTicketFile(b)
	if err != nil {
		return nil, false
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, false
	}
	cs, err := tls.NewResumptionState(ticket, ss)
	if err != nil {
		return nil, false
	}
	return cs, true
}

func (c *sessionCache) Put(_ string, cs *tls.ClientSessionState) {
	if cs == nil {
		_ = os.Remove(c.path) // crypto/tls drops a ticket the server refused
		return
	}
	ticket, ss, err := cs.ResumptionState()
	if err != nil || ss == nil {
		return
	}
	state, err := ss.Bytes()
	if err != nil {
		return
	}
	// Best effort: without the file the next dial is a full handshake.
	_ = writeTicketFile(c.dir, c.path, encodeTicketFile(ticket, state))
}

// The ticket file: a magic string, then the ticket and crypto/tls's
// session state, each as a 32-bit big-endian length and the bytes.
const (
	ticketMagic   = "NTCTICKET1\n"
	maxTicketFile = 64 << 10
)

func encodeTicketFile(ticket, state []byte) []byte {
	b := make([]byte, 0, len(ticketMagic)+8+len(ticket)+len(state))
	b = append(b, ticketMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ticket)))
	b = append(b, ticket...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(state)))
	return append(b, state...)
}

var errBadTicketFile = errors.New("malformed session ticket file")

func decodeTicketFile(b []byte) (ticket, state []byte, err error) {
	if len(b) > maxTicketFile || !bytes.HasPrefix(b, []byte(ticketMagic)) {
		return nil, nil, errBadTicketFile
	}
	b = b[len(ticketMagic):]
	field := func() ([]byte, error) {
		if len(b) < 4 {
			return nil, errBadTicketFile
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return nil, errBadTicketFile
		}
		f := b[4 : 4+n]
		b = b[4+n:]
		return f, nil
	}
	if ticket, err = field(); err != nil {
		return nil, nil, err
	}
	if state, err = field(); err != nil {
		return nil, nil, err
	}
	if len(b) != 0 || len(ticket) == 0 || len(state) == 0 {
		return nil, nil, errBadTicketFile
	}
	return ticket, state, nil
}

// writeTicketFile replaces path with data, mode 0600, in dir (mode 0700).
func writeTicketFile(dir, path string, data []byte) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".ticket.tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Server side: the ticket carries the client's ID, checked against the
// allow function when the ticket comes back, before the server takes any
// early data. (crypto/tls calls VerifyConnection on a resumed session only
// once the client's last handshake flight arrived, after its 0-RTT data.)

// ticketPeerTag marks the entry of SessionState.Extra that holds the
// client's ID.
const ticketPeerTag = "ntc-peer-v1:"

// ticketer issues and opens session tickets for a listener: its keys are
// crypto/tls's automatic ones, random and rotated daily, never stored.
type ticketer struct {
	keys  *tls.Config
	allow func(ID) bool
}

func newTicketer(allow func(ID) bool) *ticketer {
	return &ticketer{keys: &tls.Config{}, allow: allow}
}

// wrap is tls.Config.WrapSession: the client's ID goes into the ticket
// (encrypted and authenticated with the rest of it).
func (t *ticketer) wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	peer, err := peerIDOf(cs)
	if err != nil {
		return nil, err
	}
	ss.Extra = append(ss.Extra, append([]byte(ticketPeerTag), peer[:]...))
	return t.keys.EncryptTicket(cs, ss)
}

// unwrap is tls.Config.UnwrapSession: a ticket whose client the allow
// function no longer admits (or without an ID) is ignored, and the client
// falls back to a full handshake, where VerifyConnection refuses it.
func (t *ticketer) unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	ss, err := t.keys.DecryptTicket(identity, cs)
	if err != nil || ss == nil {
		return nil, err
	}
	peer, ok := ticketPeer(ss)
	if !ok || !t.allow(peer) {
		return nil, nil
	}
	return ss, nil
}

// ticketPeer returns the client ID that wrap put in ss.
func ticketPeer(ss *tls.SessionState) (ID, bool) {
	for _, e := range ss.Extra {
		if rest, ok := bytes.CutPrefix(e, []byte(ticketPeerTag)); ok && len(rest) == len(ID{}) {
			return ID(rest), true
		}
	}
	return ID{}, false
}
