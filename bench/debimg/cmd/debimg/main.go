// Command debimg builds (or finds in the cache) the benchmark's pair of
// Debian images and prints where they are and how much changed between them.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ntc-project/ntc/bench/debimg"
)

func main() {
	var opts debimg.Options
	asJSON := flag.Bool("json", false, "print the pair as JSON (changed ranges included)")
	quiet := flag.Bool("q", false, "do not log build steps")
	sizeMiB := flag.Int64("size", debimg.DefaultSize>>20, "size of each image in MiB")
	pkgs := flag.String("packages", strings.Join(debimg.DefaultPackages, ","), "comma-separated packages installed into the new image")
	flag.StringVar(&opts.CacheDir, "cache", "", "cache directory (default $NTC_CACHE/debimg or ~/.cache/ntc/debimg)")
	flag.StringVar(&opts.Suite, "suite", debimg.DefaultSuite, "Debian release")
	flag.Parse()
	opts.Size = *sizeMiB << 20
	opts.Packages = strings.Split(*pkgs, ",")
	if !*quiet {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "debimg")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := debimg.Build(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "debimg:", err)
		if ctx.Err() != nil {
			os.Exit(130)
		}
		os.Exit(1)
	}
	if *asJSON {
		out := struct {
			Old, New string
			*debimg.Pair
		}{p.Old, p.New, p}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Println(string(b))
		return
	}
	fmt.Printf("old           %s (%s allocated)\n", p.Old, allocated(p.Old))
	fmt.Printf("new           %s (%s allocated)\n", p.New, allocated(p.New))
	fmt.Printf("size          %d bytes each\n", p.Size)
	fmt.Printf("installed     %d packages (%s)\n", len(p.Installed), strings.Join(p.Packages, " "))
	fmt.Printf("changed       %d bytes in %d ranges\n", p.ChangedBytes, len(p.Changed))
	fmt.Printf("oracle        %d bytes (%s of the changed blocks)\n", p.Oracle, p.OracleCommand)
	fmt.Printf("dedup oracle  %d bytes (%s of the blocks found nowhere in old)\n", p.DedupOracle, p.OracleCommand)
	fmt.Printf("built         %s in %s\n", p.Built.Format("2006-01-02 15:04:05Z"), p.BuildTime)
}

// allocated returns how much of the file at path is on disk, in MiB.
func allocated(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "?"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(st.Blocks*512)/(1<<20))
}
