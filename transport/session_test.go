package transport_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// requestServer is an application on a listener that takes early data:
// each connection sends one request on one stream; the server reads it
// (early data may be among it), calls Confirm, and only then "commits" it
// and answers "ok".
type requestServer struct {
	mu        sync.Mutex
	requests  []string // read, before Confirm
	early     []bool   // whether the connection was still early when read
	committed []string // confirmed
	failed    int      // connections whose Confirm failed
	event     chan struct{}
}

func serveRequests(tb testing.TB, l *transport.Listener) *requestServer {
	tb.Helper()
	srv := &requestServer{event: make(chan struct{}, 100)}
	serveConns(tb, l, func(_ *errgroup.Group, c *transport.Conn) error {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return nil
		}
		req, err := io.ReadAll(s)
		if err != nil {
			return nil
		}
		early := !handshakeDone(c)
		srv.note(func() {
			srv.requests = append(srv.requests, string(req))
			srv.early = append(srv.early, early)
		})
		if err := c.Confirm(ctx); err != nil {
			// A replay, or a client that went away: nothing is committed.
			srv.note(func() { srv.failed++ })
			return nil
		}
		srv.note(func() { srv.committed = append(srv.committed, string(req)) })
		if _, err := s.Write([]byte("ok")); err != nil {
			return nil
		}
		_ = s.Close()
		<-c.Context().Done() // the client closes once it read the answer
		return nil
	})
	return srv
}

// handshakeDone reports whether c's handshake is complete already.
func handshakeDone(c *transport.Conn) bool {
	select {
	case <-c.QUIC().HandshakeComplete():
		return true
	default:
		return false
	}
}

func (s *requestServer) note(f func()) {
	s.mu.Lock()
	f()
	s.mu.Unlock()
	select {
	case s.event <- struct{}{}:
	default: // waiters have events to wake them already
	}
}

// wait waits until cond holds of the server's records.
func (s *requestServer) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.event:
		case <-time.After(20 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// request sends req on a new stream of c and reads the answer.
func request(ctx context.Context, c *transport.Conn, req string) (string, error) {
	s, err := c.OpenStream(ctx)
	if err != nil {
		return "", err
	}
	if _, err := s.Write([]byte(req)); err != nil {
		return "", err
	}
	if err := s.Close(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(s)
	return string(b), err
}

// waitTicket waits until the store holds a ticket (a server sends it just
// after the handshake).
func waitTicket(t *testing.T, dir string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(dir, "*.ticket"))
		if len(m) == 1 {
			return m[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session ticket in %s", dir)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// session is a server taking early data and a client with a ticket from it.
type session struct {
	cid, sid *transport.Identity
	l        *transport.Listener
	srv      *requestServer
	store    string
	allowed  atomic.Bool
	refused  refusals
}

func newSession(t *testing.T, srvCfg transport.Config) *session {
	t.Helper()
	s := &session{cid: transporttest.Identity(t), sid: transporttest.Identity(t), store: filepath.Join(t.TempDir(), "sessions")}
	s.allowed.Store(true)
	s.refused.ch = make(chan struct{}, 1)
	srvCfg.Allow0RTT = true
	srvCfg.Limits.Refused = s.refused.add
	s.l = transporttest.Listen(t, s.sid, func(id transport.ID) bool { return id == s.cid.ID() && s.allowed.Load() }, srvCfg)
	s.srv = serveRequests(t, s.l)
	// The first connection: a full handshake, which leaves a ticket.
	c := s.dial(t, s.l.Addr().String(), false)
	if ans, err := request(t.Context(), c, "first"); err != nil || ans != "ok" {
		t.Fatalf("first request: %q, %v", ans, err)
	}
	if c.QUIC().ConnectionState().TLS.DidResume {
		t.Fatal("the first connection resumed a session")
	}
	c.Close()
	ticket := waitTicket(t, s.store)
	for p, want := range map[string]os.FileMode{s.store: 0o700, ticket: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	return s
}

// dial dials addr with the client's tickets; early: with early data.
// (Tests open streams before the handshake completes only on paths where
// it never completes, or after it did: see Config.EarlyData on quic-go's
// data race.)
func (s *session) dial(t *testing.T, addr string, early bool) *transport.Conn {
	t.Helper()
	c, err := transport.Dial(t.Context(), addr, s.cid, s.sid.ID(), transport.Config{Sessions: transport.NewSessionStore(s.store), EarlyData: early})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestResumedSessionAuthenticatesTheSamePeer(t *testing.T) {
	s := newSession(t, transport.Config{})
	c := s.dial(t, s.l.Addr().String(), false)
	ans, err := request(t.Context(), c, "second")
	if err != nil || ans != "ok" {
		t.Fatalf("resumed request: %q, %v", ans, err)
	}
	if st := c.QUIC().ConnectionState(); !st.TLS.DidResume || st.Used0RTT {
		t.Errorf("second connection: resumed %v, 0-RTT %v; want resumed without early data", st.TLS.DidResume, st.Used0RTT)
	}
	if got := transportPeer(t, c); got != s.sid.ID() {
		t.Errorf("client sees server %s, want %s", got, s.sid.ID())
	}
	s.srv.wait(t, "two commits", func() bool { return len(s.srv.committed) == 2 })
	s.srv.mu.Lock()
	if s.srv.committed[1] != "second" {
		t.Errorf("server committed %q, want \"second\"", s.srv.committed[1])
	}
	s.srv.mu.Unlock()

	// The request leaves with the first packet: over a path that drops
	// the server's answers (so the handshake cannot complete) the server
	// still reads it, early, and does not commit it.
	rec := transporttest.Record(t, s.l.Addr())
	c = s.dial(t, rec.Addr().String(), true)
	go request(t.Context(), c, "third")
	s.srv.wait(t, "the third request", func() bool { return len(s.srv.requests) == 3 })
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	if s.srv.requests[2] != "third" || !s.srv.early[2] || len(s.srv.committed) != 2 {
		t.Errorf("server read %q early=%v and committed %q, want \"third\" read early and not committed",
			s.srv.requests[2], s.srv.early[2], s.srv.committed)
	}
}

// transportPeer is the ID of the certificate the peer's side of c holds
// in the TLS state (for a resumed session: the one in the ticket).
func transportPeer(t *testing.T, c *transport.Conn) transport.ID {
	t.Helper()
	if err := c.Confirm(t.Context()); err != nil {
		t.Fatal(err)
	}
	certs := c.QUIC().ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		t.Fatal("no peer certificate")
	}
	return sha256.Sum256(certs[0].Raw)
}

func TestResumptionRefusedOncePeerRemoved(t *testing.T) {
	s := newSession(t, transport.Config{})
	s.allowed.Store(false)
	// First over a path that drops the server's answers: the handshake
	// cannot complete, so only what the server makes of the ticket and the
	// early data shows. It reads nothing of them.
	rec := transporttest.Record(t, s.l.Addr())
	c, err := transport.Dial(t.Context(), rec.Addr().String(), s.cid, s.sid.ID(),
		transport.Config{Sessions: transport.NewSessionStore(s.store), EarlyData: true, HandshakeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := request(t.Context(), c, "early, after removal"); err == nil {
		t.Fatal("a request without answers from the server succeeded")
	}
	c.Close()
	s.srv.mu.Lock()
	if len(s.srv.requests) != 1 {
		t.Errorf("server application read %q, want only the first request", s.srv.requests)
	}
	s.srv.mu.Unlock()

	// Then directly: the server ignores the ticket, and the full
	// handshake refuses the client.
	c, err = transport.Dial(t.Context(), s.l.Addr().String(), s.cid, s.sid.ID(), transport.Config{Sessions: transport.NewSessionStore(s.store)})
	if err == nil {
		defer c.Close()
		_, err = request(t.Context(), c, "after removal")
	}
	if !errors.Is(err, transport.ErrPeerNotAllowed) {
		t.Fatalf("got %v, want an error matching ErrPeerNotAllowed", err)
	}
	if f := s.refused.next(t, 1); f.Peer != s.cid.ID() || !errors.Is(f.Err, transport.ErrPeerNotAllowed) {
		t.Errorf("refusal %+v, want the client refused as not allowed", f)
	}
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	if len(s.srv.requests) != 1 {
		t.Errorf("server application read %q, want only the first request", s.srv.requests)
	}
}

// TestReplayedEarlyDataCommitsNothing: a client's first packets, carrying
// a request as early data, reach the server (the server's answers never
// reach the client) and are then sent again by someone else. The server
// reads the request each time, early, but Confirm never succeeds: nothing
// is committed.
func TestReplayedEarlyDataCommitsNothing(t *testing.T) {
	s := newSession(t, transport.Config{HandshakeTimeout: time.Second})
	rec := transporttest.Record(t, s.l.Addr())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := s.dial(t, rec.Addr().String(), true)
	go request(ctx, c, "replay me")
	s.srv.wait(t, "the request", func() bool { return len(s.srv.requests) == 2 })
	rec.Freeze() // before the client's close
	c.Close()
	// The server is waiting for a handshake that cannot complete; replay
	// what the client sent until a new connection reads the request again
	// (the first one's IDs route the copies to it while it lasts).
	for i := 0; ; i++ {
		rec.Replay(t)
		s.srv.mu.Lock()
		n := len(s.srv.requests)
		s.srv.mu.Unlock()
		if n >= 3 {
			break
		}
		if i == 100 {
			t.Fatal("the replay never reached the server application")
		}
		select {
		case <-s.srv.event:
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Every connection that read it ends, without a commit.
	s.srv.wait(t, "the early connections to end", func() bool {
		ended := s.srv.failed + len(s.srv.committed) - 1 // the first request was committed
		return ended >= 2 && ended == len(s.srv.requests)-1
	})
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	for i, r := range s.srv.requests[1:] {
		if r != "replay me" || !s.srv.early[i+1] {
			t.Errorf("request %d: %q early=%v, want \"replay me\" read early", i+1, r, s.srv.early[i+1])
		}
	}
	if len(s.srv.committed) != 1 {
		t.Errorf("committed %q, want only the first connection's request", s.srv.committed)
	}
}

func TestEarlyDataRejectedAfterServerRestart(t *testing.T) {
	s := newSession(t, transport.Config{})
	addr := s.l.Addr().String()
	if err := s.l.Close(); err != nil {
		t.Fatal(err)
	}
	// A new listener on the same port: it never issued the ticket.
	l2, err := transport.Listen(addr, s.sid, transport.AllowIDs(s.cid.ID()), transport.Config{Allow0RTT: true})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := serveRequests(t, l2)
	c := s.dial(t, addr, true)
	// Wait for the handshake before the stream (see Config.EarlyData):
	// the refusal is known then, and the stream is refused like one
	// opened before.
	if err := c.Confirm(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err = request(t.Context(), c, "lost")
	if !errors.Is(err, transport.ErrEarlyDataRejected) {
		t.Fatalf("got %v, want ErrEarlyDataRejected", err)
	}
	c2, err := c.Retry(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if ans, err := request(t.Context(), c2, "again"); err != nil || ans != "ok" {
		t.Fatalf("after Retry: %q, %v", ans, err)
	}
	srv2.mu.Lock()
	defer srv2.mu.Unlock()
	if len(srv2.requests) != 1 || srv2.requests[0] != "again" {
		t.Errorf("new server read %q, want only the request sent again", srv2.requests)
	}
}

func TestTicketReadableByOthersIsNotUsed(t *testing.T) {
	s := newSession(t, transport.Config{})
	ticket := waitTicket(t, s.store)
	if err := os.Chmod(ticket, 0o644); err != nil {
		t.Fatal(err)
	}
	c := s.dial(t, s.l.Addr().String(), false)
	if ans, err := request(t.Context(), c, "second"); err != nil || ans != "ok" {
		t.Fatalf("request: %q, %v", ans, err)
	}
	if c.QUIC().ConnectionState().TLS.DidResume {
		t.Error("resumed with a ticket file others may read")
	}
}
