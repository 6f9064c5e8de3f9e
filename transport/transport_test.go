package transport_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// echoServer accepts connections on l and echoes every stream back until l
// is closed. It records what reached the application.
type echoServer struct {
	mu      sync.Mutex
	peers   []transport.ID // of accepted connections
	streams int
}

func serveEcho(tb testing.TB, l *transport.Listener) *echoServer {
	tb.Helper()
	srv := &echoServer{}
	serveConns(tb, l, func(g *errgroup.Group, c *transport.Conn) error {
		srv.mu.Lock()
		srv.peers = append(srv.peers, c.PeerID())
		srv.mu.Unlock()
		defer c.Close()
		for {
			s, err := c.AcceptStream(context.Background())
			if err != nil {
				return nil // the connection ended
			}
			srv.mu.Lock()
			srv.streams++
			srv.mu.Unlock()
			g.Go(func() error {
				if _, err := io.Copy(s, s); err != nil {
					return nil // the client went away mid-stream
				}
				return s.Close()
			})
		}
	})
	return srv
}

// serveConns accepts connections on l until it is closed, handling each
// in a goroutine of g. The test's end closes l (which ends every
// connection), then waits for the handlers. Registered after Listen's
// cleanup, that runs first.
func serveConns(tb testing.TB, l *transport.Listener, handle func(g *errgroup.Group, c *transport.Conn) error) {
	tb.Helper()
	var g errgroup.Group
	g.Go(func() error {
		for {
			c, err := l.Accept(context.Background())
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if err != nil {
				return err
			}
			g.Go(func() error { return handle(&g, c) })
		}
	})
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Error(err)
		}
		if err := g.Wait(); err != nil {
			tb.Error(err)
		}
	})
}

// seen reports what reached the server application so far.
func (s *echoServer) seen() (peers []transport.ID, streams int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]transport.ID(nil), s.peers...), s.streams
}

// exchange sends payload on a new stream and checks that it comes back. It
// writes while it reads: an echo stops reading while its writes wait for
// this side's receive window.
func exchange(ctx context.Context, c *transport.Conn, payload []byte) error {
	s, err := c.OpenStream(ctx)
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.Go(func() error {
		if _, err := s.Write(payload); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if err := s.Close(); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		return nil
	})
	got, err := io.ReadAll(s)
	if err != nil {
		s.Cancel(err) // unblocks the writer
		return errors.Join(fmt.Errorf("read: %w", err), g.Wait())
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo differs: got %d bytes, want %d", len(got), len(payload))
	}
	return nil
}

func TestConnect(t *testing.T) {
	const streams = 8
	stranger := transporttest.Identity(t).ID()
	tests := []struct {
		name  string
		allow func(client transport.ID) []transport.ID
		pin   func(server transport.ID) transport.ID
		// check judges the first error of Dial or of the streams.
		check        func(t *testing.T, err error, server transport.ID)
		wantAccepted bool
	}{
		{
			name:  "allowed peer exchanges data on concurrent streams",
			allow: func(client transport.ID) []transport.ID { return []transport.ID{client} },
			pin:   func(server transport.ID) transport.ID { return server },
			check: func(t *testing.T, err error, _ transport.ID) {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
			},
			wantAccepted: true,
		},
		{
			name:  "server refuses a peer not on its allow-list",
			allow: func(transport.ID) []transport.ID { return []transport.ID{stranger} },
			pin:   func(server transport.ID) transport.ID { return server },
			check: func(t *testing.T, err error, _ transport.ID) {
				if !errors.Is(err, transport.ErrPeerNotAllowed) {
					t.Fatalf("got %v, want an error matching ErrPeerNotAllowed", err)
				}
			},
		},
		{
			name:  "client refuses a server with another ID than pinned",
			allow: func(client transport.ID) []transport.ID { return []transport.ID{client} },
			pin:   func(transport.ID) transport.ID { return stranger },
			check: func(t *testing.T, err error, server transport.ID) {
				mismatch, ok := errors.AsType[*transport.PeerMismatchError](err)
				if !ok {
					t.Fatalf("got %v, want a *PeerMismatchError", err)
				}
				if mismatch.Got != server || mismatch.Want != stranger {
					t.Errorf("got %+v, want Got the server's ID %s and Want the pin %s", mismatch, server, stranger)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cid, sid, canary := transporttest.Identity(t), transporttest.Identity(t), transporttest.Identity(t)
			var askedMu sync.Mutex
			var asked []transport.ID
			allowed := transport.AllowIDs(append(tt.allow(cid.ID()), canary.ID())...)
			allow := func(id transport.ID) bool {
				askedMu.Lock()
				asked = append(asked, id)
				askedMu.Unlock()
				return allowed(id)
			}
			l := transporttest.Listen(t, sid, allow, transport.Config{})
			srv := serveEcho(t, l)
			pin := tt.pin(sid.ID())

			err := func() error {
				c, err := transport.Dial(t.Context(), l.Addr().String(), cid, pin, transport.Config{})
				if err != nil {
					return err
				}
				defer c.Close()
				if c.PeerID() != sid.ID() {
					t.Errorf("client sees peer %s, want %s", c.PeerID(), sid.ID())
				}
				g, ctx := errgroup.WithContext(t.Context())
				for i := range streams {
					g.Go(func() error {
						payload := bytes.Repeat([]byte{byte(i)}, 256<<10+i)
						return exchange(ctx, c, payload)
					})
				}
				return g.Wait()
			}()
			tt.check(t, err, sid.ID())

			// The server finished judging the client before the client
			// learnt the outcome, and quic-go queues connections in
			// handshake order: once a later, allowed connection has
			// been served, everything before it has reached the
			// application or never will.
			c, err := transport.Dial(t.Context(), l.Addr().String(), canary, sid.ID(), transport.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := exchange(t.Context(), c, []byte("canary")); err != nil {
				t.Fatal(err)
			}
			peers, gotStreams := srv.seen()
			wantPeers, wantStreams := []transport.ID{canary.ID()}, 1
			if tt.wantAccepted {
				wantPeers, wantStreams = []transport.ID{cid.ID(), canary.ID()}, streams+1
			}
			if !slices.Equal(peers, wantPeers) || gotStreams != wantStreams {
				t.Errorf("server application saw peers %v and %d streams, want %v and %d", peers, gotStreams, wantPeers, wantStreams)
			}

			askedMu.Lock()
			defer askedMu.Unlock()
			wantAsked := []transport.ID{cid.ID(), canary.ID()}
			if pin != sid.ID() { // the client gave up before sending its certificate
				wantAsked = wantAsked[1:]
			}
			if !slices.Equal(asked, wantAsked) {
				t.Errorf("allow was asked about %v, want %v", asked, wantAsked)
			}
		})
	}
}

func TestRefusedPeerSeesErrorOnFirstStreamOperation(t *testing.T) {
	cid, sid := transporttest.Identity(t), transporttest.Identity(t)
	l := transporttest.Listen(t, sid, transport.AllowIDs(), transport.Config{})
	serveEcho(t, l)
	c, err := transport.Dial(t.Context(), l.Addr().String(), cid, sid.ID(), transport.Config{})
	if err != nil {
		if !errors.Is(err, transport.ErrPeerNotAllowed) {
			t.Fatalf("Dial: got %v, want success or ErrPeerNotAllowed", err)
		}
		return // the refusal arrived before the handshake returned
	}
	defer c.Close()
	_, err = c.AcceptStream(t.Context()) // returns only when the connection ends
	if !errors.Is(err, transport.ErrPeerNotAllowed) {
		t.Fatalf("AcceptStream: got %v, want ErrPeerNotAllowed", err)
	}
	if !strings.Contains(err.Error(), "allow-list") {
		t.Errorf("error %q does not say what to do", err)
	}
	if !errors.Is(c.Err(), transport.ErrPeerNotAllowed) {
		t.Errorf("Conn.Err() = %v, want ErrPeerNotAllowed", c.Err())
	}
	if _, err := c.OpenStream(t.Context()); !errors.Is(err, transport.ErrPeerNotAllowed) {
		t.Errorf("OpenStream after refusal: got %v, want ErrPeerNotAllowed", err)
	}
}

func TestCloseSendsOnlyTheCode(t *testing.T) {
	tests := []struct {
		name  string
		close func(server *transport.Conn) error
		want  error
		code  transport.Code
	}{
		{"normal close", func(s *transport.Conn) error { return s.Close() }, transport.ErrClosed, transport.CodeNoError},
		{"protocol violation", func(s *transport.Conn) error {
			return s.CloseWithError(fmt.Errorf("secret detail: %w", transport.ErrProtocol))
		}, transport.ErrProtocol, transport.CodeProtocolViolation},
		{"unknown error", func(s *transport.Conn) error {
			return s.CloseWithError(errors.New("secret detail"))
		}, transport.ErrInternal, transport.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := transporttest.Pair(t, transport.Config{})
			if err := tt.close(server); err != nil {
				t.Fatal(err)
			}
			_, err := client.AcceptStream(t.Context())
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			we, ok := errors.AsType[*transport.WireError](err)
			if !ok || we.Code != tt.code || !we.Remote || we.Stream {
				t.Fatalf("got %#v, want a remote connection WireError with code %v", we, tt.code)
			}
			qe, ok := errors.AsType[*quic.ApplicationError](err)
			if !ok {
				t.Fatalf("%v does not wrap the quic-go error", err)
			}
			if qe.ErrorMessage != tt.code.String() || strings.Contains(err.Error(), "secret") {
				t.Errorf("reason on the wire %q, error %q: want only the code's name", qe.ErrorMessage, err)
			}
		})
	}
}

func TestStreamCancel(t *testing.T) {
	client, server := transporttest.Pair(t, transport.Config{})
	s, err := client.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	ss, err := server.AcceptStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ss.Cancel(fmt.Errorf("bad frame: %w", transport.ErrProtocol))
	_, err = io.ReadAll(s)
	we, ok := errors.AsType[*transport.WireError](err)
	if !errors.Is(err, transport.ErrProtocol) || !ok || !we.Remote || !we.Stream {
		t.Fatalf("Read after the peer cancelled: got %v, want a remote stream error matching ErrProtocol", err)
	}
	if client.Err() != nil {
		t.Errorf("connection closed with the stream: %v", client.Err())
	}
}

func TestListenerCloseShutsDownConnections(t *testing.T) {
	cid, sid := transporttest.Identity(t), transporttest.Identity(t)
	l := transporttest.Listen(t, sid, transport.AllowIDs(cid.ID()), transport.Config{})
	accepted := make(chan *transport.Conn, 1)
	go func() {
		c, err := l.Accept(t.Context())
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := transport.Dial(t.Context(), l.Addr().String(), cid, sid.ID(), transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if <-accepted == nil {
		t.FailNow()
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AcceptStream(t.Context()); !errors.Is(err, transport.ErrShuttingDown) {
		t.Errorf("client after the listener closed: got %v, want ErrShuttingDown", err)
	}
	if _, err := l.Accept(t.Context()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: got %v, want net.ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestContextCancellation(t *testing.T) {
	t.Run("Dial", func(t *testing.T) {
		// A UDP socket that never answers: the handshake cannot finish.
		hole, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer hole.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			// Cancel once the first Initial packet arrived, i.e. while
			// Dial waits for an answer.
			if _, _, err := hole.ReadFrom(make([]byte, 2048)); err == nil {
				cancel()
			}
		}()
		_, err = transport.Dial(ctx, hole.LocalAddr().String(), transporttest.Identity(t), transporttest.Identity(t).ID(), transport.Config{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("Accept", func(t *testing.T) {
		l := transporttest.Listen(t, transporttest.Identity(t), transport.AllowIDs(), transport.Config{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			_, err := l.Accept(ctx)
			done <- err
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("OpenStream", func(t *testing.T) {
		cfg := transport.Config{MaxIncomingStreams: 1}
		client, server := transporttest.Pair(t, cfg)
		// The first stream takes the only slot; the second must wait.
		s, err := client.OpenStream(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		if _, err := server.AcceptStream(t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := client.OpenStream(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestDialRequiresPin(t *testing.T) {
	_, err := transport.Dial(t.Context(), "127.0.0.1:1", transporttest.Identity(t), transport.ID{}, transport.Config{})
	if err == nil {
		t.Fatal("Dial with a zero peer ID succeeded")
	}
	if _, err := transport.Listen("127.0.0.1:0", transporttest.Identity(t), nil, transport.Config{}); err == nil {
		t.Fatal("Listen without an allow function succeeded")
	}
}

func TestUDPBuffersReported(t *testing.T) {
	client, _ := transporttest.Pair(t, transport.Config{})
	b := client.UDPBuffers()
	if b.Read <= 0 || b.Write <= 0 {
		t.Fatalf("UDPBuffers() = %+v, want the sizes", b)
	}
	t.Logf("UDP buffers: %+v, sufficient: %v", b, b.Sufficient())
}

// TestDialNothingListening: a handshake nobody answers ends with
// ErrNoAnswer (nothing listens there, or UDP does not get through), which
// callers turn into advice, not quic-go's "no recent network activity".
func TestDialNothingListening(t *testing.T) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close() // a port that takes datagrams and never answers
	id, peer := transporttest.Identity(t), transporttest.Identity(t)
	_, err = transport.Dial(t.Context(), udp.LocalAddr().String(), id, peer.ID(), transport.Config{HandshakeTimeout: 300 * time.Millisecond})
	if !errors.Is(err, transport.ErrNoAnswer) {
		t.Fatalf("dial of a port that never answers: %v, want ErrNoAnswer", err)
	}
}
