package sync

import "testing"

// TestTakeTapers: over several connections the batches cover the round
// once, in order, and shrink to single chunks at its end; over one they
// stay whole.
func TestTakeTapers(t *testing.T) {
	tests := []struct {
		name          string
		chunks, taper int
		wantFirst     int
		wantLast      int
	}{
		{"one connection", 1000, 0, sendBatch, 1000 % sendBatch},
		{"eight connections", 1000, 8, sendBatch, 1},
		{"a small round", 10, 8, 1, 1},
	}
	for _, tt := range tests {
		rp := &roundPlan{todo: make([]int, tt.chunks), batchLen: sendBatch, taper: tt.taper}
		var sizes []int
		next := 0
		for {
			k, n := rp.take()
			if n == 0 {
				break
			}
			if k != next {
				t.Fatalf("%s: batch at %d, want %d", tt.name, k, next)
			}
			next += n
			sizes = append(sizes, n)
		}
		if next != tt.chunks {
			t.Fatalf("%s: batches cover %d chunks, want %d", tt.name, next, tt.chunks)
		}
		for i := 1; i < len(sizes) && tt.taper > 0; i++ {
			if sizes[i] > sizes[i-1] {
				t.Fatalf("%s: batch %d of %d chunks after one of %d", tt.name, i, sizes[i], sizes[i-1])
			}
		}
		if sizes[0] != tt.wantFirst || sizes[len(sizes)-1] != tt.wantLast {
			t.Errorf("%s: batches of %d to %d chunks, want %d to %d", tt.name, sizes[0], sizes[len(sizes)-1], tt.wantFirst, tt.wantLast)
		}
	}
}
