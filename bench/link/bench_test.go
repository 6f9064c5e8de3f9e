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
			cpu0 := cpuTime()
			start := time.Now()
			bps := tcpGoodput(b, l, 256<<20, 0)
			b.ReportMetric(bps/1e6, "Mbit/s")
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
			b.ReportMetric(float64(all[len(all)/2])/float64(p.RTT), "rtt/profile")
		})
	}
}

// BenchmarkRate measures what crosses slow20 (20 Mbit/s, 10 ms RTT, no
// loss) and reports it against the configured rate:
//
//   - tcp: one bulk TCP transfer's goodput after its first MiB (how fast TCP
//     gets going depends on the sender's congestion control, not on the
//     link); TCP and IP headers take 52 of every 1500 bytes, so about 0.96
//     is the link doing its job.
//   - udp: 30 Mbit/s of datagrams offered for about a second; the queue
//     fills and the link delivers its own rate (IP bytes), dropping the rest.
//
// A ratio well below that with unread-pkts above zero measured a relay
// short of CPU, not the link.
func BenchmarkRate(b *testing.B) {
	p := slow20
	b.Run("tcp", func(b *testing.B) {
		l := up(b, p)
		reportRate(b, l, tcpGoodput(b, l, 4<<20, 1<<20), p.Rate)
	})
	b.Run("udp", func(b *testing.B) {
		l := up(b, p)
		const size = 1372 // 1400 bytes on the wire
		var wire float64
		var span time.Duration
		for b.Loop() {
			// The server reports once no datagram came for 300 ms, and exits.
			srv, addr := startServer(b, l.B(), "udp-serve", strconv.Itoa(int(300*time.Millisecond)))
			run(b, l.A(), nil, "udp-send", addr, "2700", strconv.Itoa(size), strconv.Itoa(int(30*Mbit)))
			var tr transfer
			srv.next(b, &tr)
			wire += float64((tr.Packets - 1) * (size + 28) * 8)
			span += tr.Span
		}
		reportRate(b, l, wire/span.Seconds(), p.Rate)
		b.ReportMetric(float64(l.Stats().AB.Overflow), "overflow-pkts")
	})
}

// tcpGoodput sends size bytes over TCP from A to B once per b.Loop and
// returns the receiver's goodput in bit/s, counted after the first warm
// bytes of each transfer.
func tcpGoodput(b *testing.B, l *Link, size, warm int) float64 {
	srv, addr := startServer(b, l.B(), "tcp-serve", strconv.Itoa(warm))
	b.SetBytes(int64(size))
	var bytes int64
	var span time.Duration
	for b.Loop() {
		run(b, l.A(), nil, "tcp-send", addr, strconv.Itoa(size))
		var tr transfer
		srv.next(b, &tr)
		bytes += tr.Bytes
		span += tr.Span
	}
	return float64(bytes) * 8 / span.Seconds()
}

// reportRate reports a measured rate in bit/s and its ratio to the link's.
func reportRate(b *testing.B, l *Link, bps float64, rate BitRate) {
	b.ReportMetric(bps/1e6, "Mbit/s")
	b.ReportMetric(bps/float64(rate), "rate/link")
	st := l.Stats()
	b.ReportMetric(float64(st.AB.Unread+st.BA.Unread), "unread-pkts")
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
