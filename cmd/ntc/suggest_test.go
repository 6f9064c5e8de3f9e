package main

import (
	"slices"
	"strings"
	"testing"
)

func TestLevenshtein(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"prev", "prev", 0}, {"prve", "prev", 2}, {"prevv", "prev", 1}, {"", "abc", 3},
		{"kitten", "sitting", 3}, {"verison", "version", 2}, {"ünï", "uni", 2},
	} {
		if got := levenshtein(tc.a, tc.b); got != tc.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if got := closest("stor", []string{"store", "streams", "serve", "stop"}); !slices.Equal(got, []string{"store", "stop"}) {
		t.Errorf("closest(stor) = %v, want [store stop] (nearest first)", got)
	}
}

// TestTyposGetSuggestions: a mistyped command or long flag is a usage error
// (exit 2) that names what was meant; what resembles nothing gets no
// suggestion.
func TestTyposGetSuggestions(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		suggest string // "" for none
	}{
		{[]string{"indx"}, "\tindex"},
		{[]string{"replicat", "--every", "5s"}, "\treplicate"},
		{[]string{"frobnicate"}, ""},
		{[]string{"index", "--prve", "x.idx", "disk.img"}, "\t--prev"},
		{[]string{"push", "--peeer", "X", "disk.img"}, "\t--peer"},
		{[]string{"serve", "--stor", "/tmp/x"}, "\t--store"},
		{[]string{"--verison"}, "\t--version"},
		{[]string{"ls", "--jsn"}, "\t--json"}, // a persistent flag
		{[]string{"index", "--frobnicate", "disk.img"}, ""},
		{[]string{"index", "-q", "disk.img"}, ""}, // shorthand: no guess
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errs := ntc(t, t.Context(), tc.args...)
			if code != exitUsage || out != "" {
				t.Fatalf("exit %d, stdout %q; want exit %d and nothing on stdout", code, out, exitUsage)
			}
			if got := strings.Contains(errs, "Did you mean this?"); got != (tc.suggest != "") || !strings.Contains(errs, tc.suggest) {
				t.Errorf("stderr %q; want suggestion %q", errs, tc.suggest)
			}
		})
	}
	// The flag named cpuprofile is hidden: never suggested.
	if _, _, errs := ntc(t, t.Context(), "ls", "--cpuprofil"); strings.Contains(errs, "cpuprofile") {
		t.Errorf("a hidden flag was suggested: %q", errs)
	}
}

// TestWrongArgumentsAreUsageErrors: positional arguments a command does not
// take are a usage error (exit 2), whichever command checks them.
func TestWrongArgumentsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"ls", "--store", t.TempDir(), "extra"}, {"version", "now"}, {"init", "x"}, {"index"}, {"diff", "one.idx"}} {
		if code, _, errs := ntc(t, t.Context(), args...); code != exitUsage {
			t.Errorf("%q: exit %d (%s), want %d", args, code, errs, exitUsage)
		}
	}
}
