// Command ntc replicates live QEMU virtual machines: it checkpoints a running
// guest, indexes its images into content-addressed chunks, sends only the
// chunks the other side lacks, and resumes the guest there.
//
// This package only wires the libraries together: flags, configuration,
// output and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one ntc command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := newGlobals(stdout, stderr)
	root := newRootCommand(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(stderr, "ntc: interrupted; nothing half-written was left behind")
		return exitInterrupted
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "ntc: %v\nRun 'ntc --help' for usage.\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "ntc: %v\n%s", err, hint(err))
		return exitError
	}
}

// usageError is a mistake in how ntc was called.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }
