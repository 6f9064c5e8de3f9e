package s3copy

import (
	"reflect"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

func sealed(tb testing.TB, parent repo.Digest) *repo.Version {
	tb.Helper()
	x, _, err := chunk.Build(tb.Context(), chunk.Bytes(randomBytes(1, 64<<10)), chunk.DefaultCDC(), chunk.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	v := &repo.Version{Set: "vm", Parent: parent, Node: "office", Created: time.Unix(1764000000, 5).UTC(),
		Images: []repo.Image{{Name: "disk"}}}
	if err := v.Seal([]*chunk.Index{x}, []byte("meta")); err != nil {
		tb.Fatal(err)
	}
	return v
}

// TestRecordRoundTrip: a record decodes to the version it was made of,
// without the node's local number and origin; one that names another
// version, or whose content is not its digest's, is refused.
func TestRecordRoundTrip(t *testing.T) {
	v := sealed(t, repo.Digest{7})
	v.Seq, v.From = 4, "s3://b/p"
	rec, err := Record(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRecord(rec, "vm", chunk.ID(v.Digest), chunk.ID(v.Parent))
	if err != nil {
		t.Fatal(err)
	}
	want := *v
	want.Seq, want.From = 0, ""
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	for name, tc := range map[string]struct {
		set            string
		digest, parent chunk.ID
	}{
		"set":    {"vm2", chunk.ID(v.Digest), chunk.ID(v.Parent)},
		"digest": {"vm", chunk.ID{1}, chunk.ID(v.Parent)},
		"parent": {"vm", chunk.ID(v.Digest), chunk.ID{}},
	} {
		if _, err := DecodeRecord(rec, tc.set, tc.digest, tc.parent); err == nil {
			t.Errorf("a record for another %s was accepted", name)
		}
	}
	forged := want
	forged.Node = "mallory" // the digest no longer matches
	rec, _ = Record(&forged)
	if _, err := DecodeRecord(rec, "vm", chunk.ID(v.Digest), chunk.ID(v.Parent)); err == nil {
		t.Error("a record whose content is not its digest's was accepted")
	}
}

// FuzzDecodeRecord: records from a bucket never panic the decoder, and a
// record accepted encodes back to the same version.
func FuzzDecodeRecord(f *testing.F) {
	v := sealed(f, repo.Digest{})
	rec, err := Record(v)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add([]byte(`{"set":"vm"}`))
	f.Add([]byte(`{"set":"../x","images":[{"name":"a/b"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeRecord(b, "vm", chunk.ID(v.Digest), chunk.ID(v.Parent))
		if err != nil {
			return
		}
		again, err := Record(got)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeRecord(again, "vm", chunk.ID(v.Digest), chunk.ID(v.Parent))
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("re-encoded record: %v", err)
		}
	})
}
