package sync

import (
	"context"
	gosync "sync"
	"time"
)

// limiter is a token bucket shared by all data streams of a push: it holds
// the average rate to bytesPerSec with bursts of at most burst bytes.
type limiter struct {
	mu     gosync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(bytesPerSec int64) *limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := max(float64(bytesPerSec)/20, 64<<10) // 50 ms of traffic
	return &limiter{rate: float64(bytesPerSec), burst: burst, tokens: 0, last: time.Now()}
}

// wait blocks until n bytes may be sent. A nil limiter never waits.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.tokens+now.Sub(l.last).Seconds()*l.rate, l.burst)
	l.last = now
	l.tokens -= float64(n)
	deficit := -l.tokens
	l.mu.Unlock()
	if deficit <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(deficit / l.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
