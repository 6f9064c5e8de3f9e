package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ntc-project/ntc/replicate"
	ntcsync "github.com/ntc-project/ntc/sync"
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

// serveCollector reads a receiver's figures when Prometheus scrapes: what
// its store holds, each set's versions and the age of its current one, and
// the refusals so far.
type serveCollector struct {
	repo     *ntcsync.Repo
	refusals *refusalLog

	storeBytes, storeChunks, versions, age, refused *prometheus.Desc
}

func newServeCollector(repo *ntcsync.Repo, refusals *refusalLog) *serveCollector {
	return &serveCollector{
		repo: repo, refusals: refusals,
		storeBytes:  prometheus.NewDesc("ntc_serve_store_bytes", "Bytes of the chunk store's pack files.", nil, nil),
		storeChunks: prometheus.NewDesc("ntc_serve_store_chunks", "Chunks the store holds.", nil, nil),
		versions:    prometheus.NewDesc("ntc_serve_versions", "Versions of the set the receiver keeps.", []string{"set"}, nil),
		age:         prometheus.NewDesc("ntc_serve_current_version_age_seconds", "Time since the set's current version was committed.", []string{"set"}, nil),
		refused:     prometheus.NewDesc("ntc_serve_refusals_total", "Connections and pushes refused or failed (unknown peers, limits, stalls, malformed frames).", nil, nil),
	}
}

func (c *serveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.storeBytes, c.storeChunks, c.versions, c.age, c.refused} {
		ch <- d
	}
}

func (c *serveCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.refusals.n.Load()))
	if st := c.repo.Store(); st != nil {
		ch <- prometheus.MustNewConstMetric(c.storeChunks, prometheus.GaugeValue, float64(st.Len()))
	}
	if packs, err := filepath.Glob(filepath.Join(c.repo.Dir(), "packs", "pack-*.dat")); err == nil {
		var bytes int64
		for _, p := range packs {
			if fi, err := os.Stat(p); err == nil {
				bytes += fi.Size()
			}
		}
		ch <- prometheus.MustNewConstMetric(c.storeBytes, prometheus.GaugeValue, float64(bytes))
	}
	sets, err := c.repo.List()
	if err != nil {
		return
	}
	for _, s := range sets {
		ch <- prometheus.MustNewConstMetric(c.versions, prometheus.GaugeValue, float64(len(s.Versions)), s.Set)
		if s.Current != nil {
			ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, time.Since(s.Current.Created).Seconds(), s.Set)
		}
	}
}
