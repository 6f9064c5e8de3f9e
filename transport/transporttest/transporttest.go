// Package transporttest provides helpers for tests and benchmarks that need
// connected [transport.Conn] pairs: a loopback pair with fresh identities,
// and a byte mover that is the baseline for stream throughput (and, with
// ProcessCPU, for CPU per byte).
package transporttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/transport"
)

// Identity returns a fresh in-memory identity.
func Identity(tb testing.TB) *transport.Identity {
	tb.Helper()
	id, err := transport.GenerateIdentity()
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// Listen listens on a free loopback port as srv, admitting the IDs allowed.
// The listener is closed when the test ends.
func Listen(tb testing.TB, srv *transport.Identity, allow func(transport.ID) bool, cfg transport.Config) *transport.Listener {
	tb.Helper()
	l, err := transport.Listen("127.0.0.1:0", srv, allow, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Error(err)
		}
	})
	return l
}

// Pair returns the two ends of a connection over loopback between two fresh
// identities, both using cfg. Both are closed when the test ends.
func Pair(tb testing.TB, cfg transport.Config) (client, server *transport.Conn) {
	tb.Helper()
	cid, sid := Identity(tb), Identity(tb)
	l := Listen(tb, sid, transport.AllowIDs(cid.ID()), cfg)
	ctx := tb.Context()
	accepted := make(chan error, 1)
	go func() {
		var err error
		server, err = l.Accept(ctx)
		accepted <- err
	}()
	client, err := transport.Dial(ctx, l.Addr().String(), cid, sid.ID(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := client.Close(); err != nil {
			tb.Error(err)
		}
	})
	if err := <-accepted; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := server.Close(); err != nil {
			tb.Error(err)
		}
	})
	return client, server
}

const bufSize = 256 << 10

// MoveBytes opens a stream from one end of a connection, sends size bytes on
// it and returns once the other end has read them all and acknowledged. It
// is one operation of [StreamThroughput].
func MoveBytes(ctx context.Context, from, to *transport.Conn, size int64) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		s, err := to.AcceptStream(ctx)
		if err != nil {
			return err
		}
		defer context.AfterFunc(ctx, func() { s.Cancel(ctx.Err()) })()
		buf := make([]byte, bufSize)
		var n int64
		for {
			m, err := s.Read(buf)
			n += int64(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
		}
		if n != size {
			return fmt.Errorf("received %d bytes, want %d", n, size)
		}
		if _, err := s.Write([]byte{1}); err != nil {
			return fmt.Errorf("acknowledge: %w", err)
		}
		return s.Close()
	})
	g.Go(func() error {
		s, err := from.OpenStream(ctx)
		if err != nil {
			return err
		}
		defer context.AfterFunc(ctx, func() { s.Cancel(ctx.Err()) })()
		buf := make([]byte, bufSize)
		for left := size; left > 0; {
			m, err := s.Write(buf[:min(left, int64(len(buf)))])
			left -= int64(m)
			if err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
		if err := s.Close(); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		// Read to the end, so that the stream completes on both sides
		// and stops counting against the peer's stream limit.
		ack, err := io.ReadAll(s)
		if err != nil {
			return fmt.Errorf("wait for acknowledgement: %w", err)
		}
		if len(ack) != 1 {
			return fmt.Errorf("acknowledgement has %d bytes, want 1", len(ack))
		}
		return nil
	})
	return g.Wait()
}

// warmUp is moved before measuring, so that flow-control windows and the
// congestion window have grown: the benchmark reports the steady rate.
const warmUp = 32 << 20

// StreamThroughput measures one stream moving size bytes per operation from
// one end of a connection to the other, reporting the rate as MB/s. The
// connection is warmed up first.
func StreamThroughput(b *testing.B, from, to *transport.Conn, size int64) {
	b.Helper()
	if err := MoveBytes(b.Context(), from, to, warmUp); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if err := MoveBytes(b.Context(), from, to, size); err != nil {
			b.Fatal(err)
		}
	}
}

// Delay forwards UDP datagrams between clients and the server at addr
// on loopback, holding each oneWay in each direction (a path with a round
// trip of twice oneWay, no loss, no rate limit), and returns the address
// clients dial instead. It stops when the test ends.
func Delay(tb testing.TB, server net.Addr, oneWay time.Duration) net.Addr {
	tb.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	var (
		mu    sync.Mutex
		backs = map[string]*net.UDPConn{} // one socket towards the server per client
		wg    sync.WaitGroup
	)
	later := func(f func()) {
		wg.Add(1)
		time.AfterFunc(oneWay, func() { defer wg.Done(); f() })
	}
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, client, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p := append([]byte(nil), buf[:n]...)
			mu.Lock()
			back := backs[client.String()]
			if back == nil {
				if back, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
					mu.Unlock()
					return
				}
				backs[client.String()] = back
				wg.Go(func() {
					buf := make([]byte, 64<<10)
					for {
						n, _, err := back.ReadFromUDP(buf)
						if err != nil {
							return
						}
						p := append([]byte(nil), buf[:n]...)
						later(func() { _, _ = front.WriteToUDP(p, client) })
					}
				})
			}
			mu.Unlock()
			later(func() { _, _ = back.WriteTo(p, server) })
		}
	})
	tb.Cleanup(func() {
		front.Close()
		mu.Lock()
		for _, b := range backs {
			b.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return front.LocalAddr()
}

// A Recorder forwards a client's datagrams to a server and drops the
// server's answers (so no handshake through it completes), keeping what
// the client sent so that a test can send it again as an attacker would.
type Recorder struct {
	pc     *net.UDPConn
	server net.Addr
	mu     sync.Mutex
	sent   [][]byte
	frozen bool
}

// Record starts a Recorder in front of the server at addr. It stops when
// the test ends.
func Record(tb testing.TB, server net.Addr) *Recorder {
	tb.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	r := &Recorder{pc: pc, server: server}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			p := append([]byte(nil), buf[:n]...)
			r.mu.Lock()
			if !r.frozen {
				r.sent = append(r.sent, p)
			}
			r.mu.Unlock()
			_, _ = up.WriteTo(p, server)
		}
	})
	tb.Cleanup(func() {
		pc.Close()
		up.Close()
		wg.Wait()
	})
	return r
}

// Addr is where clients dial.
func (r *Recorder) Addr() net.Addr { return r.pc.LocalAddr() }

// Freeze stops recording (datagrams are still forwarded).
func (r *Recorder) Freeze() {
	r.mu.Lock()
	r.frozen = true
	r.mu.Unlock()
}

// Replay sends everything recorded to the server again, from a fresh
// socket.
func (r *Recorder) Replay(tb testing.TB) {
	tb.Helper()
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer u.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.sent {
		if _, err := u.WriteTo(p, r.server); err != nil {
			tb.Fatal(err)
		}
	}
}

// ProcessCPU is the user and system CPU this process has used so far.
func ProcessCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
