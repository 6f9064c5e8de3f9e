package transport_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// refusals records what a listener refused.
type refusals struct {
	mu  sync.Mutex
	got []transport.Refusal
	ch  chan struct{}
}

func (r *refusals) add(f transport.Refusal) {
	r.mu.Lock()
	r.got = append(r.got, f)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// next waits for the n-th refusal.
func (r *refusals) next(t *testing.T, n int) transport.Refusal {
	t.Helper()
	for {
		r.mu.Lock()
		if len(r.got) >= n {
			f := r.got[n-1]
			r.mu.Unlock()
			return f
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-t.Context().Done():
			t.Fatal("no refusal")
		}
	}
}

func TestListenerLimits(t *testing.T) {
	tests := []struct {
		name    string
		limits  transport.Limits
		allowed bool
		dials   int
		// want is the refusal the last dial meets, naming its peer or not.
		want     error
		wantPeer bool
	}{
		{"peer not allowed", transport.Limits{}, false, 1, transport.ErrPeerNotAllowed, true},
		{"connections per peer", transport.Limits{ConnsPerPeer: 2}, true, 3, transport.ErrConnLimit, true},
		{"connections in all", transport.Limits{MaxConns: 2}, true, 3, transport.ErrConnLimit, true},
		{"handshakes per address", transport.Limits{HandshakesPerSecond: 0.001, HandshakeBurst: 2}, true, 3, transport.ErrHandshakeRate, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cid, sid := transporttest.Identity(t), transporttest.Identity(t)
			rec := &refusals{ch: make(chan struct{}, 1)}
			tt.limits.Refused = rec.add
			allowed := []transport.ID{}
			if tt.allowed {
				allowed = append(allowed, cid.ID())
			}
			l := transporttest.Listen(t, sid, transport.AllowIDs(allowed...), transport.Config{Limits: tt.limits})
			// Accepted connections stay open: they count.
			go func() {
				for {
					c, err := l.Accept(t.Context())
					if err != nil {
						return
					}
					t.Cleanup(func() { c.Close() })
				}
			}()
			var last error
			for i := range tt.dials {
				c, err := transport.Dial(t.Context(), l.Addr().String(), cid, sid.ID(), transport.Config{})
				if err == nil {
					t.Cleanup(func() { c.Close() })
					if i == tt.dials-1 {
						// A refusal after the handshake closes the
						// connection.
						<-c.Context().Done()
						err = c.Err()
					}
				}
				last = err
			}
			if !errors.Is(last, tt.want) && !(tt.want == transport.ErrHandshakeRate && last != nil) {
				t.Fatalf("last dial: %v, want %v", last, tt.want)
			}
			f := rec.next(t, 1)
			if !errors.Is(f.Err, tt.want) {
				t.Fatalf("refusal %v, want %v", f.Err, tt.want)
			}
			if ua, ok := f.Addr.(*net.UDPAddr); !ok || !ua.IP.IsLoopback() {
				t.Fatalf("refusal names address %v", f.Addr)
			}
			if got := f.Peer == cid.ID(); got != tt.wantPeer {
				t.Fatalf("refusal names peer %s, want the client's ID: %v", f.Peer, tt.wantPeer)
			}
		})
	}
}

func TestKeyReadableByOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := transport.LoadOrCreateIdentity(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v %v", fi.Mode(), err)
	}
	if _, err := transport.LoadIdentity(dir); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, transport.KeyFile), 0o644)
	if _, err := transport.LoadIdentity(dir); err == nil {
		t.Fatal("a key others may read was loaded")
	}
	if _, _, err := transport.LoadOrCreateIdentity(dir); err == nil {
		t.Fatal("a key others may read was loaded")
	}
}
