package sync

import (
	"context"
	"time"
)

// limiter holds the average rate of what crosses the wire to bytesPerSec.
// It reads the connection's own count of bytes sent (QUIC framing,
// retransmissions and acknowledgements included), so the cap is what the
// link sees, not an estimate of it; bursts stay within about 50 ms of
// traffic.
type limiter struct {
	rate  float64 // bytes per second
	burst float64
	start time.Time
	base  uint64
	sent  func() uint64
}

func newLimiter(bytesPerSec int64, sent func() uint64) *limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return &limiter{
		rate:  float64(bytesPerSec),
		burst: max(float64(bytesPerSec)/20, 64<<10),
		start: time.Now(),
		base:  sent(),
		sent:  sent,
	}
}

// wait blocks until n more bytes may be sent. A nil limiter never waits.
// It is safe for concurrent use.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for {
		allowed := l.rate*time.Since(l.start).Seconds() + l.burst
		used := float64(l.sent()-l.base) + float64(n)
		if used <= allowed {
			return nil
		}
		t := time.NewTimer(time.Duration((used - allowed) / l.rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
