package sync

import (
	"testing"
	"time"
)

func TestConnsFor(t *testing.T) {
	tests := []struct {
		rtt   time.Duration
		limit int
		want  int
	}{
		{300 * time.Microsecond, 8, 1}, // a LAN: the control connection alone
		{40 * time.Millisecond, 8, 4},  // bench's dsl
		{80 * time.Millisecond, 8, 8},  // bench's wan
		{80 * time.Millisecond, 4, 4},  // at most the limit
		{200 * time.Millisecond, 0, 1},
	}
	for _, tt := range tests {
		if got := connsFor(tt.rtt, tt.limit); got != tt.want {
			t.Errorf("connsFor(%v, %d) = %d, want %d", tt.rtt, tt.limit, got, tt.want)
		}
	}
}
