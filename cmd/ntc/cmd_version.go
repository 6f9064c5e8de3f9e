package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version, if set at build time with -ldflags "-X main.version=…", is
// ntc's version; otherwise the module's version from the build information
// ('go install …@v1.2.3') or "devel".
var version string

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print ntc's version (also: ntc --version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVersion(g)
		},
	}
}

func runVersion(g *globals) error {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	info := versionFrom(version, bi)
	if g.json {
		return writeJSON(g.stdout, info)
	}
	_, err := fmt.Fprintln(g.stdout, info)
	return err
}

type versionJSON struct {
	Version string `json:"version"`
	// Commit is the git revision built, CommitTime its time, Modified
	// whether the work tree had uncommitted changes: all empty when the
	// build recorded none (built outside a git checkout, or with
	// -buildvcs=false).
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	Go         string `json:"go"`
	Index      int    `json:"index_format"`
}

// versionFrom describes the ntc built with version ldVersion (empty: not
// set) and build information bi (nil: none).
func versionFrom(ldVersion string, bi *debug.BuildInfo) versionJSON {
	v := versionJSON{Version: ldVersion, Go: runtime.Version(), Index: 1}
	if bi != nil {
		if bi.GoVersion != "" {
			v.Go = bi.GoVersion
		}
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.CommitTime = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	return v
}

// String is the one line 'ntc version' prints.
func (v versionJSON) String() string {
	var about []string
	switch {
	case v.Commit != "":
		c := "commit " + v.Commit[:min(12, len(v.Commit))]
		if v.Modified {
			c += " with uncommitted changes"
		}
		if v.CommitTime != "" {
			c += " of " + v.CommitTime
		}
		about = append(about, c)
	case v.Version == "devel":
		about = append(about, "no commit recorded: built outside a git checkout or with -buildvcs=false")
	}
	return fmt.Sprintf("ntc %s (%s)", v.Version, strings.Join(append(about, v.Go), "; "))
}
