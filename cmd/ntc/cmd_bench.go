package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/bench"
	"github.com/ntc-project/ntc/bench/link"
	"github.com/ntc-project/ntc/chunk"
)

type benchOptions struct {
	scenarios string
	links     string
	tools     string
	size      string
	dir       string
	out       string
	vmWork    time.Duration
	trace     bool
	pushArgs  string
}

func newBenchCommand(g *globals) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Compare ntc with rsync and a full copy over emulated WAN links",
		Long: `Bench runs each tool on each scenario over each emulated link, in one run, and
reports bytes on the wire, time, CPU and memory of both sides, and the ratios to
the physical limit (the zstd-compressed changed 4 KiB blocks at the link rate,
plus two round trips), to rsync -z and to a full zstd copy.

The links are emulated in user space at packet level between two network
namespaces the benchmark creates and removes (no traffic leaves the machine):
  dsl  20 Mbit/s, 40 ms RTT, 0.1% loss
  wan  100 Mbit/s, 80 ms RTT, 0.5% loss
  lan  1 Gbit/s, 1 ms RTT
It needs root (network namespaces) and rsync.

Scenarios: random-1pct and random-10pct rewrite 1% or 10% of a random image
in scattered 64 KiB extents; debian installs packages (python3, curl, less)
into a Debian root file system image built with mmdebstrap (cached); vm-idle
and vm-busy boot the test guest (256 MiB; vm-busy rewrites 32 MiB of its RAM
and 4 MiB of its disk continuously), checkpoint it with 'ntc checkpoint', let
it work for --vm-work and checkpoint it again: ntc pushes the second
checkpoint to a receiver holding the first, rsync and a full copy send the
checkpoints as files (the migration stream and the raw disk), and QEMU's own
live migration ("qemu migrate") moves the guest restored from the second
checkpoint between two QEMUs, one in each namespace. They need QEMU.

Examples:
  ntc bench                                  the random scenarios on dsl, 64 MiB images
  ntc bench --scenario debian --link dsl,lan
  ntc bench --link dsl,wan,lan --size 256M --out results/
  ntc bench --scenario random-10pct --tools ntc,rsync-z --json
  ntc bench --scenario vm-idle,vm-busy --link dsl,lan --vm-work 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.scenarios, "scenario", strings.Join(bench.DefaultScenarios, ","), "scenarios, comma separated: "+strings.Join(bench.ScenarioNames, ", "))
	f.StringVar(&o.links, "link", "dsl", "link profiles, comma separated: dsl, wan, lan")
	f.StringVar(&o.tools, "tools", "all", "tools: ntc, ntc+changed, rsync-z, rsync, full-zstd, migrate, handoff, or all")
	f.StringVar(&o.pushArgs, "push-args", "", "extra arguments for the measured 'ntc push', e.g. \"--conns 1\" (an experiment: the report then is not of the defaults)")
	f.BoolVar(&o.trace, "trace", false, "write each case's packet timeline to --out (trace-*.tsv)")
	f.DurationVar(&o.vmWork, "vm-work", time.Minute, "how long the guest works between the VM scenarios' two checkpoints")
	f.StringVar(&o.size, "size", "64M", "image size of the synthetic scenarios")
	f.StringVar(&o.dir, "dir", "", "work directory (default: a temporary one)")
	f.StringVarP(&o.out, "out", "o", "", "directory for report.md, report.json and chart.svg")
	return cmd
}

func runBench(ctx context.Context, g *globals, o benchOptions) error {
	if err := link.Available(); err != nil {
		return fmt.Errorf("bench needs network namespaces: %w (run it as root, e.g. sudo ntc bench)", err)
	}
	size, err := chunk.ParseSize(o.size)
	if err != nil || size < 1<<20 {
		return usagef("--size %q: want at least 1M", o.size)
	}
	var profiles []link.Profile
	for _, n := range strings.Split(o.links, ",") {
		p, err := link.ProfileByName(strings.TrimSpace(n))
		if err != nil {
			return usageError{err}
		}
		profiles = append(profiles, p)
	}
	tools, err := parseTools(o.tools)
	if err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ntc-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	cfg := bench.Config{Bin: bin, Dir: dir, Profiles: profiles, Tools: tools, PushArgs: strings.Fields(o.pushArgs)}
	if o.trace {
		if o.out == "" {
			return usagef("--trace writes to the --out directory: give one")
		}
		cfg.TraceDir = o.out
	}
	if !g.json {
		cfg.Progress = func(f string, a ...any) { fmt.Fprintf(g.stderr, "bench: "+f+"\n", a...) }
	}
	for _, name := range strings.Split(o.scenarios, ",") {
		name = strings.TrimSpace(name)
		if bench.IsVM(name) {
			sc, err := bench.PrepareVM(ctx, name, filepath.Join(dir, "vms"), bin, bench.VMOptions{Work: o.vmWork, Progress: cfg.Progress})
			if err != nil {
				return err
			}
			cfg.Scenarios = append(cfg.Scenarios, sc)
			continue
		}
		sc, err := bench.Prepare(ctx, name, filepath.Join(dir, "images"), size)
		if err != nil {
			return usageError{err}
		}
		cfg.Scenarios = append(cfg.Scenarios, sc)
	}
	cases, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if o.out != "" {
		if err := writeBenchFiles(o.out, cases); err != nil {
			return err
		}
	}
	if g.json {
		return bench.JSON(g.stdout, cases)
	}
	bench.Markdown(g.stdout, cases)
	return nil
}

func parseTools(s string) ([]string, error) {
	if s == "all" || s == "" {
		return bench.AllTools, nil
	}
	names := map[string]string{"ntc": bench.ToolNTC, "ntc+changed": bench.ToolNTCChanged, "rsync-z": bench.ToolRsyncZ,
		"rsync": bench.ToolRsync, "full-zstd": bench.ToolFullZstd, "migrate": bench.ToolMigrate, "handoff": bench.ToolHandoff}
	var out []string
	for _, t := range strings.Split(s, ",") {
		tool, ok := names[strings.TrimSpace(t)]
		if !ok {
			return nil, usagef("--tools: unknown tool %q (have ntc, ntc+changed, rsync-z, rsync, full-zstd, migrate)", t)
		}
		out = append(out, tool)
	}
	return out, nil
}

func writeBenchFiles(dir string, cases []bench.Case) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, write := range map[string]func(f *os.File) error{
		"report.md":   func(f *os.File) error { bench.Markdown(f, cases); return nil },
		"report.json": func(f *os.File) error { return bench.JSON(f, cases) },
		"chart.svg":   func(f *os.File) error { bench.SVG(f, cases); return nil },
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
