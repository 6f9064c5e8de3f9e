package guesttest

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
)

// SkipIfNoQEMU skips tb when QEMU (or qemu-img) is not installed. CI installs
// both, so there the tests run.
func SkipIfNoQEMU(tb testing.TB) {
	tb.Helper()
	for _, bin := range []string{testguest.DefaultQEMU, "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("%s not found (%v): install Debian's qemu-system-x86 and qemu-utils to run guest tests", bin, err)
		}
	}
}

// Build builds (or finds in the cache) the default guest, failing tb on
// error.
func Build(tb testing.TB) *testguest.Guest {
	tb.Helper()
	g, err := testguest.Build(tb.Context(), testguest.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// Start starts a VM for a test: it skips tb if QEMU is absent, fails it if
// the VM does not start, and kills the VM and removes its directory in
// cleanup. If the test failed, cleanup logs the end of the serial console and
// QEMU's stderr.
func Start(tb testing.TB, opts testguest.StartOptions) *testguest.VM {
	tb.Helper()
	SkipIfNoQEMU(tb)
	ctx, cancel := context.WithTimeout(tb.Context(), 5*time.Minute)
	defer cancel()
	vm, err := testguest.Start(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			lines := vm.Serial()
			tb.Logf("guest serial console, last lines:\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			if s := vm.Stderr(); s != "" {
				tb.Logf("qemu stderr:\n%s", s)
			}
		}
		if err := vm.Close(); err != nil && !errors.Is(err, testguest.ErrExited) {
			tb.Error(err)
		}
	})
	return vm
}
