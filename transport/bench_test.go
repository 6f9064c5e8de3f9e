package transport_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// BenchmarkStreamThroughput moves data over one stream on loopback with the
// default Config: the baseline for what sync achieves on the same path.
//
//	go test -run x -bench StreamThroughput -benchtime 3x ./transport/
func BenchmarkStreamThroughput(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int64
	}{
		{"1MiB", 1 << 20},
		{"64MiB", 64 << 20},
	} {
		b.Run(size.name, func(b *testing.B) {
			client, server := transporttest.Pair(b, transport.Config{})
			transporttest.StreamThroughput(b, client, server, size.bytes)
		})
	}
}

// BenchmarkFirstAnswer: from Dial to the answer of a first request on a
// fresh connection over a path of 40 ms round trip (bench's dsl), with a
// full handshake, a resumed session, and a resumed session whose request
// rides in the first packet (0-RTT), in turn in the same run. The server answers
// before the handshake is confirmed, as a receiver answers an offer.
//
//	go test -run '^$' -bench FirstAnswer -benchtime 20x ./transport/
func BenchmarkFirstAnswer(b *testing.B) {
	cid, sid := transporttest.Identity(b), transporttest.Identity(b)
	l := transporttest.Listen(b, sid, transport.AllowIDs(cid.ID()), transport.Config{Allow0RTT: true})
	go func() {
		for {
			c, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				s, err := c.AcceptStream(context.Background())
				if err != nil {
					return
				}
				if _, err := io.ReadAll(s); err == nil {
					s.Write([]byte("answer"))
					s.Close()
				}
				<-c.Context().Done()
			}()
		}
	}()
	const oneWay = 20 * time.Millisecond
	addr := transporttest.Delay(b, l.Addr(), oneWay).String()
	store := transport.NewSessionStore(b.TempDir())
	ask := func(cfg transport.Config) time.Duration {
		t0 := time.Now()
		c, err := transport.Dial(b.Context(), addr, cid, sid.ID(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		s, err := c.OpenStream(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Write([]byte("request")); err != nil {
			b.Fatal(err)
		}
		s.Close()
		if ans, err := io.ReadAll(s); err != nil || string(ans) != "answer" {
			b.Fatalf("answer %q, %v", ans, err)
		}
		return time.Since(t0)
	}
	early := transport.Config{Sessions: store, EarlyData: true}
	ask(early) // the first ticket
	var full, resumed, zero time.Duration
	for b.Loop() {
		full += ask(transport.Config{})
		resumed += ask(transport.Config{Sessions: store})
		zero += ask(early)
	}
	n := float64(b.N)
	b.ReportMetric(full.Seconds()*1e3/n, "full-ms")
	b.ReportMetric(resumed.Seconds()*1e3/n, "resumed-ms")
	b.ReportMetric(zero.Seconds()*1e3/n, "0rtt-ms")
	b.ReportMetric(float64(full-zero)/n/float64(2*oneWay), "RTTs-saved")
	b.ReportMetric(0, "ns/op")
}
