package testguest_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

// BenchmarkBuildCached measures Build when the guest is in the cache: what
// every test pays.
func BenchmarkBuildCached(b *testing.B) {
	guesttest.SkipIfNoQEMU(b)
	guesttest.Build(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := testguest.Build(b.Context(), testguest.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoot measures a guest from Start (QEMU launch) to its first tick
// under TCG, and QEMU's resident memory then, for an idle guest and one
// rewriting 64 MiB of RAM. Run with -benchtime=3x: each iteration is a boot.
func BenchmarkBoot(b *testing.B) {
	guesttest.SkipIfNoQEMU(b)
	g := guesttest.Build(b)
	for _, busy := range []int{0, 64} {
		b.Run("busy="+strconv.Itoa(busy), func(b *testing.B) {
			var rss int64
			for b.Loop() {
				ctx, cancel := context.WithTimeout(b.Context(), 2*time.Minute)
				vm, err := testguest.Start(ctx, testguest.StartOptions{Guest: g, BusyMiB: busy, NIC: true})
				if err != nil {
					cancel()
					b.Fatal(err)
				}
				_, err = vm.WaitTick(ctx, 1)
				b.StopTimer()
				if err == nil && busy > 0 {
					_, err = vm.WaitSerial(ctx, busyPass2)
				}
				if r, rerr := vm.RSS(); rerr == nil {
					rss = max(rss, r)
				}
				vm.Close()
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(rss)/(1<<20), "MiB-rss")
		})
	}
}
