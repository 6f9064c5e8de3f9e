package repo

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy says which versions of a set to keep, as backup tools do: the
// newest Last, and the newest version of each of the last Hourly hours,
// Daily days and Weekly weeks (ISO weeks) that have one. A version kept by
// any rule is kept. The zero Policy keeps everything.
type Policy struct {
	Last, Hourly, Daily, Weekly int
}

// IsZero reports whether p keeps everything.
func (p Policy) IsZero() bool { return p == Policy{} }

func (p Policy) String() string {
	var parts []string
	for _, r := range []struct {
		n    int
		name string
	}{{p.Last, "last"}, {p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"}} {
		if r.n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", r.name, r.n))
		}
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ",")
}

// ParsePolicy reads "last=10,hourly=24,daily=7,weekly=4" (any subset), or a
// bare number N as last=N, or "all".
func ParsePolicy(s string) (Policy, error) {
	var p Policy
	s = strings.TrimSpace(s)
	if s == "" || s == "all" || s == "0" {
		return p, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return p, fmt.Errorf("keep %q: want a number of versions, 0 for all", s)
		}
		p.Last = n
		return p, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return p, fmt.Errorf("keep %q: want rules like last=10,hourly=24,daily=7,weekly=4", s)
		}
		switch k {
		case "last":
			p.Last = n
		case "hourly":
			p.Hourly = n
		case "daily":
			p.Daily = n
		case "weekly":
			p.Weekly = n
		default:
			return p, fmt.Errorf("keep %q: unknown rule %q (last, hourly, daily, weekly)", s, k)
		}
	}
	return p, nil
}

// Keep returns, for versions created at the given instants (any order),
// which to keep under p, by position.
func (p Policy) Keep(created []time.Time) []bool {
	keep := make([]bool, len(created))
	if p.IsZero() {
		for i := range keep {
			keep[i] = true
		}
		return keep
	}
	// Newest first.
	order := make([]int, len(created))
	for i := range order {
		order[i] = i
	}
	sortNewestFirst(order, created)
	for n, i := range order {
		if n < p.Last {
			keep[i] = true
		}
	}
	bucket := func(n int, key func(time.Time) string) {
		seen := map[string]bool{}
		for _, i := range order {
			if len(seen) >= n {
				return
			}
			k := key(created[i].UTC())
			if !seen[k] {
				seen[k] = true
				keep[i] = true
			}
		}
	}
	bucket(p.Hourly, func(t time.Time) string { return t.Format("2006-01-02T15") })
	bucket(p.Daily, func(t time.Time) string { return t.Format("2006-01-02") })
	bucket(p.Weekly, func(t time.Time) string {
		y, w := t.ISOWeek()
		return fmt.Sprintf("%d-%02d", y, w)
	})
	return keep
}

// KeepVersions is Keep for versions, by their creation: a Keep for Thin.
func (p Policy) KeepVersions(vs []*Version) []bool {
	created := make([]time.Time, len(vs))
	for i, v := range vs {
		created[i] = v.Created
	}
	return p.Keep(created)
}

func sortNewestFirst(order []int, created []time.Time) {
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && created[order[j]].After(created[order[j-1]]); j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
}
