package s3store

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"
)

func FuzzDecodeGC(f *testing.F) {
	f.Add(emptyGC().encode())
	v := emptyGC()
	v.epoch = 7
	v.condemned[packName{1}] = true
	v.deleting[packName{2, 3}] = true
	v.collector, v.since = "0123456789abcdef", time.Unix(1764000000, 0).UTC()
	f.Add(v.encode())
	f.Add([]byte(`{"epoch":1,"condemned":["zz"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeGC(b)
		if err != nil {
			return
		}
		again, err := decodeGC(v.encode())
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if again.epoch != v.epoch || again.collector != v.collector || !again.since.Equal(v.since) || !maps.Equal(again.condemned, v.condemned) || !maps.Equal(again.deleting, v.deleting) {
			t.Fatalf("round trip changed the state: %+v, %+v", v, again)
		}
	})
}

// TestBlobsAndRefList: blobs are created once, read back within a bound,
// listed with the server's time, removed; refs list by directory.
func TestBlobsAndRefList(t *testing.T) {
	tb := newTestBed(t)
	s := tb.open(t, tb.config())
	ctx := t.Context()
	bl := s.Blobs()
	if err := bl.Create(ctx, "sets/vm/v/a/record", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := bl.Create(ctx, "sets/vm/v/a/record", []byte("two")); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	if got, err := bl.Get(ctx, "sets/vm/v/a/record", 10); err != nil || string(got) != "one" {
		t.Fatalf("get: %q, %v", got, err)
	}
	if _, err := bl.Get(ctx, "sets/vm/v/a/record", 2); err == nil {
		t.Fatal("a blob over the limit was read")
	}
	for _, bad := range []string{"../x", "a/../../b", ".x", ""} {
		if err := bl.Create(ctx, bad, []byte("x")); err == nil {
			t.Fatalf("blob name %q accepted", bad)
		}
	}
	now, err := s.Clock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var listed []Blob
	if err := bl.List(ctx, "sets/", func(b Blob) error { listed = append(listed, b); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Name != "sets/vm/v/a/record" || listed[0].Size != 3 || listed[0].Modified.After(now) {
		t.Fatalf("listed %+v (clock %v)", listed, now)
	}
	if err := bl.Remove(ctx, "sets/vm/v/a/record"); err != nil {
		t.Fatal(err)
	}
	if _, err := bl.Get(ctx, "sets/vm/v/a/record", 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after remove: %v, want ErrNotFound", err)
	}

	for _, n := range []string{"sets/a/head", "sets/b/head", "other"} {
		if _, err := s.Refs().Create(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	var refs []string
	if err := s.Refs().List(ctx, "sets/", func(n string) error { refs = append(refs, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(refs, []string{"sets/a/head", "sets/b/head"}) {
		t.Fatalf("refs under sets/: %q", refs)
	}
}
