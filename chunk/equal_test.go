package chunk

import "testing"

func TestIndexEqual(t *testing.T) {
	mk := func() *Index {
		return &Index{Params: DefaultCDC(), Size: 12 << 10, Entries: []Entry{
			{Offset: 0, Length: 8 << 10, ID: ID{1}},
			{Offset: 8 << 10, Length: 4 << 10, Zero: true},
		}}
	}
	if !mk().Equal(mk()) {
		t.Fatal("two indexes of the same entries differ")
	}
	for _, tc := range []struct {
		name   string
		change func(*Index)
	}{
		{"params", func(x *Index) { x.Params.MinSize = 4 << 10 }},
		{"size", func(x *Index) { x.Size++ }},
		{"an entry's ID", func(x *Index) { x.Entries[0].ID[31] = 1 }},
		{"a boundary", func(x *Index) { x.Entries[0].Length--; x.Entries[1].Offset--; x.Entries[1].Length++ }},
		{"a zero run", func(x *Index) { x.Entries[1].Zero = false }},
		{"an entry fewer", func(x *Index) { x.Entries = x.Entries[:1] }},
	} {
		y := mk()
		tc.change(y)
		if mk().Equal(y) || y.Equal(mk()) {
			t.Errorf("%s changed: still Equal", tc.name)
		}
	}
}
