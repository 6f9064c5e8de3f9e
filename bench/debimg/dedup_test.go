package debimg

import (
	"path/filepath"
	"slices"
	"testing"
)

// TestNewBlocks: a block counts as new only if its content is nowhere in
// Old and not earlier in New; moved, repeated and zero blocks do not.
func TestNewBlocks(t *testing.T) {
	const B = BlockSize
	a := write{off: 0, n: B, b: 0x11}
	for _, tc := range []struct {
		name     string
		old, new []write
		want     []Range
	}{
		{"same", []write{a}, []write{a}, nil},
		{"moved", []write{a}, []write{{off: 4 * B, n: B, b: 0x11}}, nil},
		{"new", []write{a}, []write{a, {off: B, n: B, b: 0x22}}, []Range{{Off: B, Len: B}}},
		{"new twice", nil, []write{{off: 0, n: B, b: 0x22}, {off: 3 * B, n: B, b: 0x22}}, []Range{{Off: 0, Len: B}}},
		{"zeros written", []write{a}, []write{a, {off: 2 * B, n: 2 * B, b: 0}}, nil},
		{"adjacent merged", nil, []write{{off: B, n: B, b: 0x33}, {off: 2 * B, n: B, b: 0x44}}, []Range{{Off: B, Len: 2 * B}}},
		{"partly changed block", []write{a}, []write{a, {off: 100, n: 1, b: 0x55}}, []Range{{Off: 0, Len: B}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			old, new := filepath.Join(dir, "old"), filepath.Join(dir, "new")
			makeImage(t, old, 8*B, tc.old)
			makeImage(t, new, 8*B, tc.new)
			got, err := NewBlocks(t.Context(), old, new)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("NewBlocks = %v, want %v", got, tc.want)
			}
		})
	}
}
