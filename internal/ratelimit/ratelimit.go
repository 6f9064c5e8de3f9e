// Package ratelimit holds token buckets keyed by a string: how often each
// source (an address, a peer) may do something, with a burst. It is for
// refusing a flood cheaply and for logging it without drowning the log.
//
// It does not queue or delay anything: Allow answers at once.
package ratelimit

import (
	"sync"
	"time"
)

// Keyed is a token bucket per key: each key earns Rate tokens a second,
// holds at most Burst, and spends one per allowed event. Keys idle long
// enough to have refilled are forgotten, so memory follows the keys
// active recently. It is safe for concurrent use.
type Keyed struct {
	Rate  float64
	Burst int
	// MaxKeys bounds the keys remembered; when full, a new key is refused
	// until old ones are forgotten (0: 65536).
	MaxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
	now     func() time.Time // tests
}

type bucket struct {
	tokens float64
	at     time.Time
	// Dropped counts the events refused since the last allowed one.
	dropped int
}

// Allow reports whether key may act now, spending a token if so, and how
// many of its events were refused since the last one allowed.
func (k *Keyed) Allow(key string) (ok bool, dropped int) {
	now := time.Now()
	if k.now != nil {
		now = k.now()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.buckets == nil {
		k.buckets = map[string]*bucket{}
		k.swept = now
	}
	full := time.Duration(float64(k.Burst) / k.Rate * float64(time.Second))
	if now.Sub(k.swept) > full {
		for key, b := range k.buckets {
			if now.Sub(b.at) > full {
				delete(k.buckets, key)
			}
		}
		k.swept = now
	}
	b := k.buckets[key]
	if b == nil {
		max := k.MaxKeys
		if max <= 0 {
			max = 65536
		}
		if len(k.buckets) >= max {
			return false, 0
		}
		b = &bucket{tokens: float64(k.Burst), at: now}
		k.buckets[key] = b
	}
	b.tokens = min(float64(k.Burst), b.tokens+now.Sub(b.at).Seconds()*k.Rate)
	b.at = now
	if b.tokens < 1 {
		b.dropped++
		return false, 0
	}
	b.tokens--
	dropped, b.dropped = b.dropped, 0
	return true, dropped
}
