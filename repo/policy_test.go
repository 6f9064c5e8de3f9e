package repo

import (
	"testing"
	"time"
)

func TestPolicyKeep(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	// Versions every 20 minutes for three days, oldest first.
	var created []time.Time
	for i := 3*24*3 - 1; i >= 0; i-- {
		created = append(created, t0.Add(-time.Duration(i)*20*time.Minute))
	}
	count := func(keep []bool) (n int) {
		for _, k := range keep {
			if k {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		p    Policy
		want int
	}{
		{Policy{}, len(created)},
		{Policy{Last: 5}, 5},
		{Policy{Hourly: 4}, 4},
		{Policy{Daily: 2}, 2},
		{Policy{Daily: 10}, 4},          // 3 days of versions span 4 calendar days
		{Policy{Last: 3, Hourly: 2}, 3}, // 12:00 and 11:40 are the newest of their hours, and among the last 3
		{Policy{Weekly: 5}, 1},          // all in one ISO week
		{Policy{Last: 1000, Daily: 1}, len(created)},
	} {
		keep := tc.p.Keep(created)
		if got := count(keep); got != tc.want {
			t.Errorf("%v keeps %d of %d, want %d", tc.p, got, len(created), tc.want)
		}
		if !tc.p.IsZero() && !keep[len(keep)-1] {
			t.Errorf("%v drops the newest version", tc.p)
		}
	}
	// Each daily keeper is the newest version of its day.
	keep := Policy{Daily: 2}.Keep(created)
	for i, k := range keep {
		if k && i+1 < len(created) && created[i+1].Format("2006-01-02") == created[i].Format("2006-01-02") {
			t.Errorf("daily kept %v, not the newest of its day", created[i])
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		ok   bool
	}{
		{"", Policy{}, true},
		{"all", Policy{}, true},
		{"10", Policy{Last: 10}, true},
		{"last=3,hourly=24,daily=7,weekly=4", Policy{3, 24, 7, 4}, true},
		{"daily=7", Policy{Daily: 7}, true},
		{"monthly=3", Policy{}, false},
		{"last=-1", Policy{}, false},
		{"-2", Policy{}, false},
		{"last", Policy{}, false},
	} {
		got, err := ParsePolicy(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParsePolicy(%q) = %+v, %v", tc.in, got, err)
		}
		if tc.ok {
			if again, err := ParsePolicy(got.String()); err != nil || again != got {
				t.Errorf("%q does not survive String: %q → %+v, %v", tc.in, got.String(), again, err)
			}
		}
	}
}
