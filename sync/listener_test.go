package sync

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// TestServeListener: pushes are served while it runs; once ctx ends it
// returns nil, and with Keep set it has collected what pruning freed.
func TestServeListener(t *testing.T) {
	a, b := newNode(t), newNode(t)
	l := transporttest.Listen(t, b.id, transport.AllowIDs(a.id.ID()), transport.Config{})
	b.addr = l.Addr().String()
	keep, err := repo.ParsePolicy("1")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &Receiver{Repo: b.repo, Keep: keep, Logger: testLogger(t, nil)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rcv.ServeListener(ctx, l) }()
	r := rand.New(rand.NewPCG(5, 5))
	for i := range 3 {
		if _, _, err := a.push(t, b, imageVersion(t, "vm", map[string][]byte{"disk": randomData(r, 1<<20)})); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeListener after ctx ended: %v", err)
	}
	sets, err := b.repo.List()
	if err != nil || len(sets) != 1 || len(sets[0].Versions) != 1 {
		t.Errorf("versions kept with Keep 1: %+v, %v", sets, err)
	}
}
