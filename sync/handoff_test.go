package sync

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	gosync "sync"
	"sync/atomic"
	"testing"

	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// TestRequestResume: a receiver resumes only through its Resumer, only the
// set's current version, and says why not otherwise.
func TestRequestResume(t *testing.T) {
	a, b := newNode(t), newNode(t)
	var (
		mu      gosync.Mutex
		asked   []string
		allowed atomic.Bool
	)
	l := transporttest.Listen(t, b.id, transport.AllowIDs(a.id.ID()), transport.Config{})
	b.addr = l.Addr().String()
	rcv := &Receiver{Repo: b.repo, Logger: testLogger(t, nil)}
	rcv.Resume = func(ctx context.Context, peer transport.ID, set string, version uint64) (Resumed, error) {
		if peer != a.id.ID() || !allowed.Load() {
			return Resumed{}, ErrResumeRefused
		}
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, set)
		return Resumed{PID: 42, Detail: "running"}, nil
	}
	serveAll(t, l, rcv, func(error) {})
	r := rand.New(rand.NewPCG(3, 3))
	res, _, err := a.push(t, b, imageVersion(t, "vm", map[string][]byte{"disk": randomData(r, 1<<20)}))
	if err != nil {
		t.Fatal(err)
	}
	request := func(d repo.Digest) (*Resumed, error) {
		c, err := transport.Dial(t.Context(), b.addr, a.id, b.id.ID(), transport.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return a.sender.RequestResume(t.Context(), c, "vm", d)
	}

	// A peer the Resumer does not allow is refused.
	if _, err := request(res.Digest); !errors.Is(err, ErrResumeRefused) {
		t.Fatalf("resume for a peer not allowed: %v, want ErrResumeRefused", err)
	}
	allowed.Store(true)
	// Only the current version: another digest is refused, nothing started.
	started := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(asked)
	}
	if _, err := request(repo.Digest{1}); !errors.Is(err, ErrNotCurrent) || started() != nil {
		t.Fatalf("resume of a version that is not current: %v (started %v), want ErrNotCurrent", err, started())
	}
	got, err := request(res.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != 42 || got.Version != res.Version || got.Set != "vm" || got.Detail != "running" || len(started()) != 1 {
		t.Errorf("resumed %+v (asked %v), want pid 42 of vm v%d", got, started(), res.Version)
	}
}

// FuzzDecodeResume: the hand-off's messages decode without panicking and
// encode back to what they were.
func FuzzDecodeResume(f *testing.F) {
	f.Add(false, resumeRequest{set: "vm", digest: repo.Digest{1}}.encode())
	f.Add(true, Resumed{Version: 3, PID: 1234, Detail: "pid 1234"}.encode())
	f.Fuzz(func(t *testing.T, answer bool, b []byte) {
		if answer {
			m, err := decodeResumed(b)
			if err != nil {
				return
			}
			if len(m.Detail) > maxResumedDetail {
				t.Fatalf("detail of %d bytes accepted", len(m.Detail))
			}
			if m2, err := decodeResumed(m.encode()); err != nil || m2 != m {
				t.Fatalf("resumed re-decode: %+v, %v", m2, err)
			}
			return
		}
		m, err := decodeResumeRequest(b)
		if err != nil {
			return
		}
		if m2, err := decodeResumeRequest(m.encode()); err != nil || m2 != m {
			t.Fatalf("request re-decode: %+v, %v", m2, err)
		}
	})
}
