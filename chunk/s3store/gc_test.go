package s3store

import (
	"maps"
	"testing"
)

func FuzzDecodeGC(f *testing.F) {
	f.Add(emptyGC().encode())
	v := emptyGC()
	v.epoch = 7
	v.condemned[packName{1}] = true
	v.deleting[packName{2, 3}] = true
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
		if again.epoch != v.epoch || !maps.Equal(again.condemned, v.condemned) || !maps.Equal(again.deleting, v.deleting) {
			t.Fatalf("round trip changed the state: %+v, %+v", v, again)
		}
	})
}
