package sync

import (
	"sync/atomic"
	"testing"
	"time"
)

// The limiter makes senders wait at least as long as the rate requires
// for what the connection reports sent.
func TestLimiterHoldsTheRate(t *testing.T) {
	var sent atomic.Uint64
	const rate = 4 << 20 // bytes per second
	// The limiter's clock starts in newLimiter: the test's must not start
	// after it (449.9 ms against 450 failed once).
	start := time.Now()
	l := newLimiter(rate, sent.Load)
	const total = 2 << 20
	for sent.Load() < total {
		if err := l.wait(t.Context(), 32<<10); err != nil {
			t.Fatal(err)
		}
		sent.Add(32 << 10)
	}
	min := time.Duration(float64(total-l.burst) / rate * float64(time.Second))
	if el := time.Since(start); el < min {
		t.Fatalf("sent %d bytes in %s, the rate allows no less than %s", total, el, min)
	}
	if newLimiter(0, sent.Load) != nil {
		t.Fatal("a zero rate must mean no limiter")
	}
}
