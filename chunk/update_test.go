package chunk

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestUpdate: without a previous index Update reads the whole image with
// the parameters given; with one it reads only around the changes (an
// empty list: nothing) and gives what a full index would.
func TestUpdate(t *testing.T) {
	ctx := t.Context()
	r := rand.New(rand.NewPCG(3, 3))
	data := testImage(r, 4<<20)
	p := testParams[0]
	full, st, err := Update(ctx, Bytes(data), p, nil, nil, Options{})
	if err != nil || full.Params != p || st.BytesRead != int64(len(data)) {
		t.Fatalf("Update without prev: params %v, read %d of %d, %v", full.Params, st.BytesRead, len(data), err)
	}
	same, st, err := Update(ctx, Bytes(data), DefaultCDC(), full, []Range{}, Options{})
	if err != nil || st.BytesRead != 0 || same.Params != p {
		t.Fatalf("Update with nothing changed: read %d, params %v, %v", st.BytesRead, same.Params, err)
	}
	assertEntries(t, same.Entries, full.Entries)
	next := slices.Clone(data)
	changed := mutate(r, next)
	got, _, err := Update(ctx, Bytes(next), DefaultCDC(), full, changed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertEntries(t, got.Entries, naiveIndex(t, next, p))
}
