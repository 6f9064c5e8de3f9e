// Command runguest boots the ntc test guest under QEMU and keeps it running
// until interrupted, for trying ntc by hand:
//
//	go run ./internal/testguest/cmd/runguest -dir /tmp/vm -busy 32 &
//	ntc checkpoint --qmp /tmp/vm/qmp.sock --out /tmp/ckpt
//
// It prints the QMP socket's path once the guest ticks, then its ticks.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "runguest:", err)
		os.Exit(1)
	}
}

func run() error {
	var o testguest.StartOptions
	flag.StringVar(&o.Dir, "dir", "", "directory for the disk, QMP socket and serial log (default: a temporary one, removed at exit)")
	flag.IntVar(&o.MemoryMiB, "m", testguest.DefaultMemoryMiB, "guest RAM in MiB")
	flag.IntVar(&o.BusyMiB, "busy", 0, "MiB of guest RAM rewritten continuously")
	flag.IntVar(&o.DiskBusyMiB, "diskbusy", 1, "MiB of the disk rewritten continuously")
	mem := flag.String("memory", "auto", "guest RAM backing: auto (huge pages where free), private, shared or hugepages")
	flag.BoolVar(&o.NIC, "nic", false, "add a virtio-net NIC (link never brought up)")
	flag.Parse()
	o.Memory = testguest.Memory(*mem)
	if *mem == "auto" {
		o.Memory = testguest.PreferHugePages(o.MemoryMiB)
	}
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	vm, err := testguest.Start(ctx, o)
	if err != nil {
		return err
	}
	defer vm.Close()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if _, err := vm.WaitTick(wctx, 1); err != nil {
		return err
	}
	fmt.Printf("qmp %s (RAM %d MiB, %s)\n", vm.QMPPath(), o.MemoryMiB, o.Memory)
	for n := vm.LastTick() + 1; ; n++ {
		if _, err := vm.WaitTick(ctx, n); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Printf("tick %d\n", n)
	}
}
