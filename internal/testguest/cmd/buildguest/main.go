// Command buildguest builds (or finds in the cache) the ntc test guest and
// prints where its kernel and initramfs are. `make guest` runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ntc-project/ntc/internal/testguest"
)

func main() {
	var opts testguest.Options
	asJSON := flag.Bool("json", false, "print the guest as JSON")
	quiet := flag.Bool("q", false, "do not log build steps")
	flag.StringVar(&opts.CacheDir, "cache", "", "cache directory (default $NTC_CACHE/guest or ~/.cache/ntc/guest)")
	flag.StringVar(&opts.KernelPackage, "kernel-package", "", "versioned kernel package (default: what "+testguest.KernelMetaPackage+" depends on)")
	flag.Parse()
	if !*quiet {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, err := testguest.Build(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildguest:", err)
		if ctx.Err() != nil {
			os.Exit(130)
		}
		os.Exit(1)
	}
	if *asJSON {
		out := struct {
			Kernel, Initrd string
			*testguest.Guest
		}{g.Kernel, g.Initrd, g}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Println(string(b))
		return
	}
	fmt.Printf("kernel %s\ninitrd %s\n", g.Kernel, g.Initrd)
}
