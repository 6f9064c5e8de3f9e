package main

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFrom(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: modified}}
	}
	for _, tc := range []struct {
		name string
		ld   string
		bi   *debug.BuildInfo
		want versionJSON
		line string
	}{
		{"go install @version", "", &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v1.2.3"}, Settings: vcs("false")},
			versionJSON{Version: "v1.2.3", Commit: rev, CommitTime: "2026-01-02T03:04:05Z", Go: "go1.26.1", Index: 1},
			"ntc v1.2.3 (commit 0123456789ab of 2026-01-02T03:04:05Z; go1.26.1)"},
		{"checkout with changes", "", &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")},
			versionJSON{Version: "devel", Commit: rev, CommitTime: "2026-01-02T03:04:05Z", Modified: true, Go: "go1.26.1", Index: 1},
			"ntc devel (commit 0123456789ab with uncommitted changes of 2026-01-02T03:04:05Z; go1.26.1)"},
		{"ldflags win", "v2.0.0-rc1", &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v1.2.3"}},
			versionJSON{Version: "v2.0.0-rc1", Go: "go1.26.1", Index: 1},
			"ntc v2.0.0-rc1 (go1.26.1)"},
		{"nothing recorded", "", &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "(devel)"}},
			versionJSON{Version: "devel", Go: "go1.26.1", Index: 1},
			"ntc devel (no commit recorded: built outside a git checkout or with -buildvcs=false; go1.26.1)"},
		{"no build info", "", nil,
			versionJSON{Version: "devel", Go: runtime.Version(), Index: 1},
			"ntc devel (no commit recorded: built outside a git checkout or with -buildvcs=false; " + runtime.Version() + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := versionFrom(tc.ld, tc.bi)
			if got != tc.want || got.String() != tc.line {
				t.Errorf("got %+v %q\nwant %+v %q", got, got.String(), tc.want, tc.line)
			}
		})
	}
}

// TestVersionFlag: 'ntc --version' is 'ntc version', text and JSON, and
// says what this binary is.
func TestVersionFlag(t *testing.T) {
	for _, json := range []bool{false, true} {
		var pre []string
		if json {
			pre = []string{"--json"}
		}
		c1, cmd, e1 := ntc(t, t.Context(), append(pre, "version")...)
		c2, flag, e2 := ntc(t, t.Context(), append(pre, "--version")...)
		if c1 != 0 || c2 != 0 || cmd != flag || cmd == "" {
			t.Errorf("json %v: 'version' exit %d %q %s; '--version' exit %d %q %s; want the same", json, c1, cmd, e1, c2, flag, e2)
		}
	}
	_, out, _ := ntc(t, t.Context(), "--json", "version")
	var v versionJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.Version == "" || v.Version == "unknown" || v.Go != runtime.Version() || v.Index != 1 {
		t.Errorf("version %+v", v)
	}
	if _, text, _ := ntc(t, t.Context(), "version"); !strings.HasPrefix(text, "ntc "+v.Version+" (") || strings.Contains(text, "unknown") {
		t.Errorf("version says %q", text)
	}
}
