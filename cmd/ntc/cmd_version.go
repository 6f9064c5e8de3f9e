package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print ntc's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			info := versionInfo()
			if g.json {
				return writeJSON(g.stdout, info)
			}
			_, err := fmt.Fprintf(g.stdout, "ntc %s (%s, %s)\n", info.Version, info.Go, info.Commit)
			return err
		},
	}
}

type versionJSON struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
	Index   int    `json:"index_format"`
}

func versionInfo() versionJSON {
	v := versionJSON{Version: version, Commit: "unknown", Index: 1}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Go = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v.Commit = s.Value[:12]
			}
		}
	}
	return v
}
