package s3versions

import (
	"reflect"
	"testing"

	"github.com/ntc-project/ntc/chunk"
)

func FuzzDecodeHead(f *testing.F) {
	empty := &Head{Set: "vm", Next: 1}
	b, _ := empty.encode()
	f.Add(b)
	h := &Head{Set: "vm", Next: 4, Current: 3, barrier: "ab", Versions: []Entry{
		{Seq: 1, Digest: chunk.ID{1}, Images: []string{"disk"}, key: newKey(chunk.ID{1})},
		{Seq: 3, Digest: chunk.ID{3}, Parent: chunk.ID{1}, Images: []string{"disk", "ram.pc.ram"}, Meta: true, key: newKey(chunk.ID{3})},
	}}
	b, _ = h.encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHead("vm", b)
		if err != nil {
			return
		}
		enc, _ := h.encode()
		again, err := decodeHead("vm", enc)
		if err != nil {
			t.Fatalf("re-encoded head does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, h) {
			t.Fatalf("round trip changed the head:\n%+v\n%+v", h, again)
		}
	})
}

func TestDecodeHeadRefuses(t *testing.T) {
	ok := func(h *Head) []byte { b, _ := h.encode(); return b }
	e := func(seq uint64, d byte) Entry {
		return Entry{Seq: seq, Digest: chunk.ID{d}, Images: []string{"disk"}, key: newKey(chunk.ID{d})}
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"other set", ok(&Head{Set: "other", Next: 1})},
		{"numbers out of order", ok(&Head{Set: "vm", Next: 5, Versions: []Entry{e(2, 1), e(1, 2)}})},
		{"number not below next", ok(&Head{Set: "vm", Next: 2, Versions: []Entry{e(2, 1)}})},
		{"digest twice", ok(&Head{Set: "vm", Next: 5, Versions: []Entry{e(1, 1), e(2, 1)}})},
		{"current not listed", ok(&Head{Set: "vm", Next: 5, Current: 3, Versions: []Entry{e(1, 1)}})},
		{"image climbing out", ok(&Head{Set: "vm", Next: 5, Versions: []Entry{{Seq: 1, Digest: chunk.ID{1}, Images: []string{"../x"}, key: newKey(chunk.ID{1})}}})},
		{"key climbing out", ok(&Head{Set: "vm", Next: 5, Versions: []Entry{{Seq: 1, Digest: chunk.ID{1}, Images: []string{"disk"}, key: "../../x"}}})},
		{"not JSON", []byte("{")},
		{"format", []byte(`{"format":2,"set":"vm","next":1}`)},
	} {
		if _, err := decodeHead("vm", tc.b); err == nil {
			t.Errorf("%s: decoded", tc.name)
		}
	}
}
