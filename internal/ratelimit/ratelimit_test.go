package ratelimit

import (
	"testing"
	"time"
)

func TestKeyed(t *testing.T) {
	now := time.Unix(1000, 0)
	k := &Keyed{Rate: 2, Burst: 3, MaxKeys: 2, now: func() time.Time { return now }}
	steps := []struct {
		advance time.Duration
		key     string
		ok      bool
		dropped int
	}{
		{0, "a", true, 0},
		{0, "a", true, 0},
		{0, "a", true, 0},
		{0, "a", false, 0}, // burst spent
		{0, "a", false, 0},
		{0, "b", true, 0},                      // another key has its own
		{0, "c", false, 0},                     // no room for a third key
		{500 * time.Millisecond, "a", true, 2}, // one token back; two were refused
		{0, "a", false, 0},
		{10 * time.Second, "c", true, 0}, // idle keys forgotten
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		ok, dropped := k.Allow(s.key)
		if ok != s.ok || dropped != s.dropped {
			t.Fatalf("step %d (%s): Allow = %v, %d; want %v, %d", i, s.key, ok, dropped, s.ok, s.dropped)
		}
	}
}
