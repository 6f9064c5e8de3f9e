package link

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkRelay pushes a bulk TCP transfer from A to B and reports the rate
// the receiver saw and the CPU the relay used (cores busy while it ran).
// "unlimited" shapes nothing: it is the relay's own ceiling.
func BenchmarkRelay(b *testing.B) {
	for _, p := range []Profile{{Name: "unlimited"}, mustProfile(b, "lan")} {
		b.Run(p.Name, func(b *testing.B) {
			l := up(b, p)
			srv, addr := startServer(b, l.B(), "tcp-serve")
			const size = 256 << 20
			b.SetBytes(size)
			var bytes int64
			var span time.Duration
			cpu0 := cpuTime()
			start := time.Now()
			for b.Loop() {
				run(b, l.A(), nil, "tcp-send", addr, strconv.Itoa(size))
				var tr transfer
				srv.next(b, &tr)
				bytes += tr.Bytes
				span += tr.Span
			}
			b.ReportMetric(float64(bytes)*8/span.Seconds()/1e6, "Mbit/s")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/time.Since(start).Seconds(), "relay-cores")
			st := l.Stats()
			b.ReportMetric(float64(st.AB.Unread+st.BA.Unread), "unread-pkts")
			b.ReportMetric(float64(st.AB.Overflow), "overflow-pkts")
		})
	}
}

// BenchmarkRTT reports the median TCP connect time across each profile: one
// round trip, which the profile sets.
func BenchmarkRTT(b *testing.B) {
	for _, p := range Profiles() {
		b.Run(p.Name, func(b *testing.B) {
			l := up(b, p)
			_, addr := startServer(b, l.B(), "tcp-serve")
			var all []time.Duration
			for b.Loop() {
				var ds []time.Duration
				run(b, l.A(), &ds, "tcp-connect", addr, "20")
				all = append(all, ds...)
			}
			slices.Sort(all)
			ms := func(d time.Duration) float64 { return d.Seconds() * 1e3 }
			b.ReportMetric(ms(all[len(all)/2]), "median-ms")
			b.ReportMetric(ms(all[len(all)*9/10]), "p90-ms")
			b.ReportMetric(ms(p.RTT), "profile-ms")
		})
	}
}

func mustProfile(tb testing.TB, name string) Profile {
	p, err := ProfileByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// cpuTime is the CPU this process (the relay; helpers are children) used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
