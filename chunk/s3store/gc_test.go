package s3store

import (
	"maps"
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
