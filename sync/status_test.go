package sync

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// TestRequestStatus: a receiver tells a peer it accepts what it holds of
// each set (current version, its instant and sender, how many versions),
// of all sets or those named, and refuses a bad name.
func TestRequestStatus(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(8, 8))
	s := &Sender{StateDir: t.TempDir(), Node: "office"}
	var last *Result
	for i, set := range []string{"web", "db", "db"} {
		res, err := p.push(t, ctx, s, imageVersion(t, set, map[string][]byte{"disk": randomData(r, 64<<10+i)}))
		if err != nil {
			t.Fatal(err)
		}
		<-p.errs
		last = res
	}
	var took time.Duration
	ask := func(sets ...string) (*PeerStatus, error) {
		t.Helper()
		c, err := transport.Dial(ctx, p.addr, p.client, p.srvID, transport.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		st, err := RequestStatus(ctx, c, sets...)
		took = time.Since(t0)
		c.Close()
		<-p.errs
		return st, err
	}
	t0 := time.Now()
	st, err := ask()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status of %d sets answered in %s", len(st.Sets), took)
	if len(st.Sets) != 2 || st.Now.Before(t0.Add(-time.Second)) {
		t.Fatalf("status: %+v", st)
	}
	byName := map[string]SetStatus{}
	for _, ss := range st.Sets {
		byName[ss.Set] = ss
	}
	db, web := byName["db"], byName["web"]
	if db.Version != 2 || db.Versions != 2 || db.Digest != last.Digest || db.Sender != p.client.ID().String() || web.Version != 1 || web.Versions != 1 {
		t.Errorf("db %+v, web %+v; want db v2 of 2 (%s) from %s, web v1", db, web, last.Digest.Short(), p.client.ID())
	}
	cur, err := p.repo.Current("db")
	if err != nil || !db.Created.Equal(cur.Created) {
		t.Errorf("db's instant %v, the repository's %v (%v)", db.Created, cur.Created, err)
	}

	st, err = ask("web", "nothing")
	if err != nil || len(st.Sets) != 1 || st.Sets[0].Set != "web" {
		t.Fatalf("status of web: %+v, %v", st, err)
	}
	// A bad name is refused by the asker, before it uses the connection
	// (a connection closed right after its handshake may never reach the
	// receiver's Serve: nothing would come on p.errs); sent raw, by the
	// receiver.
	if _, err := RequestStatus(ctx, nil, "../x"); !errors.Is(err, ErrBadName) {
		t.Fatalf("status of a bad name: %v", err)
	}
	c, err := transport.Dial(ctx, p.addr, p.client, p.srvID, transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctrl, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, rd := newFrameWriter(ctrl), newFrameReader(ctrl)
	if err := w.write(msgStatus, statusRequest{sets: []string{"../x"}}.encode()); err != nil || w.flush() != nil {
		t.Fatal(err)
	}
	if _, err := rd.expect(msgSets); !errors.Is(err, ErrBadName) {
		t.Fatalf("raw status of a bad name: %v", err)
	}
}

// FuzzDecodeStatus: status messages decode without panicking, within their
// bounds, and decode again from their encoding to the same content.
func FuzzDecodeStatus(f *testing.F) {
	f.Add(false, statusRequest{sets: []string{"vm", "db"}}.encode())
	f.Add(true, PeerStatus{Now: time.Unix(1700000000, 5), Sets: []SetStatus{
		{Set: "vm", Version: 3, Digest: repo.Digest{1}, Created: time.Unix(1690000000, 7), Sender: "NODE", Versions: 3, Diverged: 1}}}.encode())
	f.Fuzz(func(t *testing.T, answer bool, b []byte) {
		if !answer {
			m, err := decodeStatusRequest(b)
			if err != nil {
				return
			}
			if len(m.sets) > maxStatusAsk {
				t.Fatalf("%d sets asked", len(m.sets))
			}
			m2, err := decodeStatusRequest(m.encode())
			if err != nil || len(m2.sets) != len(m.sets) {
				t.Fatalf("request re-decode: %+v, %v", m2, err)
			}
			return
		}
		m, err := decodePeerStatus(b)
		if err != nil {
			return
		}
		if len(m.Sets) > maxStatusSets {
			t.Fatalf("%d sets answered", len(m.Sets))
		}
		m2, err := decodePeerStatus(m.encode())
		if err != nil || !m2.Now.Equal(m.Now) || len(m2.Sets) != len(m.Sets) {
			t.Fatalf("status re-decode: %+v, %v", m2, err)
		}
		for i := range m.Sets {
			a, b := m.Sets[i], m2.Sets[i]
			if !a.Created.Equal(b.Created) {
				t.Fatalf("set %d re-decodes as %+v, was %+v", i, b, a)
			}
			a.Created, b.Created = time.Time{}, time.Time{}
			if a != b {
				t.Fatalf("set %d re-decodes as %+v, was %+v", i, b, a)
			}
		}
	})
}
