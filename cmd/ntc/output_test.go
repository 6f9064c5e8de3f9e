package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestProgressDraw: a bar with a total shows its share and an ETA; one
// whose total is not known yet (a push before the receiver says what it
// wants) shows what was done and how fast, never a 0 B total or an
// absurd ETA.
func TestProgressDraw(t *testing.T) {
	for _, tc := range []struct {
		name        string
		total, done int64
		want, not   []string
	}{
		{"total known", 4 << 20, 1 << 20, []string{"25%", "1.0 MiB/4.0 MiB", "ETA"}, nil},
		{"total unknown", 0, 5 << 20, []string{"sending 5.0 MiB"}, []string{"ETA", "/0 B", "%"}},
		{"total learnt", 0, 1 << 20, []string{"50%"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			p := &progress{label: "sending", w: &b}
			p.total.Store(tc.total)
			if tc.name == "total learnt" {
				p.AddTotal(2 << 20)
			}
			p.Add(tc.done)
			p.draw()
			got := b.String()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("%q shows %q", got, n)
				}
			}
		})
	}
}
