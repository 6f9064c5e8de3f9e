package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ntc-project/ntc/replicate"
)

// serveMetrics serves reg's metrics at http://addr/metrics until ctx ends,
// for Prometheus and what reads its format. It returns once listening, with
// the address it listens on.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w (give another --metrics-listen, or none)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.Close()
		}
	}()
	return l.Addr(), nil
}

// newRegistry returns a registry with the Go runtime's and the process's
// collectors (memory, CPU, open files).
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// replicateMetrics are what 'ntc replicate --metrics-listen' exposes.
type replicateMetrics struct {
	rounds      *prometheus.CounterVec
	failures    prometheus.Gauge
	lag         prometheus.Gauge
	lastSuccess prometheus.Gauge
	pause       prometheus.Histogram
	duration    prometheus.Histogram
	bytes       prometheus.Counter
	chunks      prometheus.Counter
}

func newReplicateMetrics(reg prometheus.Registerer, set string) *replicateMetrics {
	labels := prometheus.Labels{"set": set}
	m := &replicateMetrics{
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ntc_replicate_rounds_total", Help: "Replication rounds (checkpoint and push) by result.", ConstLabels: labels,
		}, []string{"result"}),
		failures: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ntc_replicate_consecutive_failures", Help: "Rounds that failed since the last one that succeeded.", ConstLabels: labels,
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ntc_replicate_lag_seconds", Help: "How far behind the guest the receiver's copy was when the last round committed.", ConstLabels: labels,
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ntc_replicate_last_success_timestamp_seconds", Help: "When a round last committed a version at the receiver (Unix time).", ConstLabels: labels,
		}),
		pause: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ntc_replicate_guest_pause_seconds", Help: "How long each checkpoint paused the guest.", ConstLabels: labels,
			Buckets: []float64{.005, .01, .02, .05, .1, .2, .5, 1, 2},
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ntc_replicate_round_duration_seconds", Help: "How long each round took, checkpoint and push.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 12),
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ntc_replicate_sent_bytes_total", Help: "Bytes on the wire, both ways, of the pushes.", ConstLabels: labels,
		}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ntc_replicate_sent_chunks_total", Help: "Chunks the receiver lacked and was sent.", ConstLabels: labels,
		}),
	}
	reg.MustRegister(m.rounds, m.failures, m.lag, m.lastSuccess, m.pause, m.duration, m.bytes, m.chunks)
	m.rounds.WithLabelValues("ok")
	m.rounds.WithLabelValues("failed")
	return m
}

// observe records one round.
func (m *replicateMetrics) observe(r replicate.Round) {
	m.failures.Set(float64(r.Failures))
	m.duration.Observe(r.Duration.Seconds())
	m.bytes.Add(float64(r.BytesSent))
	m.chunks.Add(float64(r.ChunksSent))
	if r.GuestPause > 0 {
		m.pause.Observe(r.GuestPause.Seconds())
	}
	if r.Err != nil {
		m.rounds.WithLabelValues("failed").Inc()
		return
	}
	m.rounds.WithLabelValues("ok").Inc()
	if r.Committed {
		m.lag.Set(r.Lag.Seconds())
		m.lastSuccess.Set(float64(r.Start.Add(r.Duration).UnixNano()) / 1e9)
	}
}
