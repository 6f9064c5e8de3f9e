package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

var smallSize = flag.Int64("small.size", 128<<20, "image size for BenchmarkSmallPush")

// BenchmarkSmallPush: where the time of a small push goes, from process
// start to `committed`, on loopback against a running 'ntc serve'. Each
// round rewrites 1% of a 128 MiB image (scattered 64 KiB extents) and
// pushes it with --changed (the writes known, as capture knows them):
//
//   - `ntc push` as a process, timed from exec to exit (process-ms), beside
//     `ntc id`, a process that loads the configuration and the identity and
//     does nothing else (noop-ms): the cost of starting a process;
//   - the same push done in this process by the calls runPush makes, each
//     phase timed on one clock with the receiver's log lines (serve
//     --log-format json stamps them in nanoseconds): identity load,
//     handshake, indexing, hello+offer sent, offer received by the
//     receiver, data received, store sync, commit, images written,
//     `committed` back at the sender.
//
// Every figure is the median of the rounds (-benchtime Nx: N rounds).
//
//	go test -run '^$' -bench SmallPush -benchtime 9x ./bench/
func BenchmarkSmallPush(b *testing.B) {
	ctx := b.Context()
	bin := buildNTC(b)
	p := newPair(b, bin, "--log-format", "json")
	office, home, srv := p.office, p.home, p.srv
	img := filepath.Join(b.TempDir(), "disk.img")
	if err := WriteRandom(img, *smallSize, 1); err != nil {
		b.Fatal(err)
	}
	if _, err := office.Push(ctx, srv.Addr, home.ID, img); err != nil {
		b.Fatal(err)
	}
	peer, err := transport.ParseID(home.ID)
	if err != nil {
		b.Fatal(err)
	}
	var runs []*pushPhases
	var procMS, noopMS, outsideMS, procIndexMS []float64
	seed := uint64(10)
	for b.Loop() {
		// The process, then the same push in this process.
		seed++
		ext, _, err := RewriteScattered(img, 0.01, 64<<10, seed)
		if err != nil {
			b.Fatal(err)
		}
		syncFS(b)
		t0 := time.Now()
		res, err := office.Push(ctx, srv.Addr, home.ID, img, "--changed", Ranges(ext))
		if err != nil {
			b.Fatal(err)
		}
		procMS = append(procMS, ms(time.Since(t0)))
		// Outside push's own clock: process start, configuration,
		// identity, and the exit.
		outsideMS = append(outsideMS, ms(res.Wall)-float64(res.DurationMS))
		procIndexMS = append(procIndexMS, float64(res.IndexMS))
		t0 = time.Now()
		if err := office.Command(ctx, "id").Run(); err != nil {
			b.Fatal(err)
		}
		noopMS = append(noopMS, ms(time.Since(t0)))

		seed++
		if ext, _, err = RewriteScattered(img, 0.01, 64<<10, seed); err != nil {
			b.Fatal(err)
		}
		syncFS(b)
		ph, err := pushInProcess(ctx, office.Home, srv.Addr, peer, img, ext)
		if err != nil {
			b.Fatal(err)
		}
		runs = append(runs, ph)
	}
	srv.Stop()
	if err := matchReceiverLog(srv.Log(), runs); err != nil {
		b.Fatal(err)
	}
	med := func(f func(*pushPhases) float64) float64 {
		var xs []float64
		for _, p := range runs {
			xs = append(xs, f(p))
		}
		return median(xs)
	}
	rel := func(t time.Time, p *pushPhases) float64 { return ms(t.Sub(p.start)) }
	b.ReportMetric(median(procMS), "process-ms")
	b.ReportMetric(median(noopMS), "noop-process-ms")
	b.ReportMetric(med(func(p *pushPhases) float64 { return rel(p.committed, p) }), "inproc-ms")
	b.ReportMetric(0, "ns/op")
	type row struct {
		name string
		f    func(*pushPhases) float64
	}
	rows := []row{
		{"identity load", func(p *pushPhases) float64 { return ms(p.identity.Sub(p.start)) }},
		{"handshake (Dial)", func(p *pushPhases) float64 { return ms(p.dialed.Sub(p.identity)) }},
		{"index (--changed)", func(p *pushPhases) float64 { return ms(p.indexed.Sub(p.dialed)) }},
		{"Push → base back (record, hello, offer)", func(p *pushPhases) float64 { return ms(p.offered.Sub(p.indexed)) }},
		{"base back → offer parsed by receiver", func(p *pushPhases) float64 { return ms(p.rcvOffer.Sub(p.offered)) }},
		{"offer received → data in (want, data)", func(p *pushPhases) float64 { return ms(p.rcvData.Sub(p.rcvOffer)) }},
		{"  of which the round", func(p *pushPhases) float64 { return ms(p.round) }},
		{"data in → committed logged", func(p *pushPhases) float64 { return ms(p.rcvCommit.Sub(p.rcvData)) }},
		{"  store sync", func(p *pushPhases) float64 { return ms(p.storeSync) }},
		{"  commit", func(p *pushPhases) float64 { return ms(p.commit) }},
		{"  images written (materialise)", func(p *pushPhases) float64 { return ms(p.materialise) }},
		{"committed logged → at sender", func(p *pushPhases) float64 { return ms(p.committed.Sub(p.rcvCommit)) }},
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d rounds, medians (ms): process %.1f (ntc id %.1f; outside push's clock %.1f, its indexing %.1f); in-process %.1f\n",
		len(runs), median(procMS), median(noopMS), median(outsideMS), median(procIndexMS), med(func(p *pushPhases) float64 { return rel(p.committed, p) }))
	for _, r := range rows {
		fmt.Fprintf(&sb, "  %-40s %7.2f\n", r.name, med(r.f))
	}
	// b.Log truncates a benchmark's log: print the table whole.
	fmt.Print(sb.String())
}

// pushPhases are the moments of one push done in this process, and what
// the receiver logged of it.
type pushPhases struct {
	start, identity, dialed, indexed, offered, committed time.Time
	digest                                               string

	rcvOffer, rcvData, rcvCommit          time.Time
	round, storeSync, commit, materialise time.Duration
}

// pushInProcess does what runPush does for one image with --changed,
// noting when each phase ends.
func pushInProcess(ctx context.Context, home, addr string, peer transport.ID, img string, ext []Extent) (*pushPhases, error) {
	p := &pushPhases{start: time.Now()}
	id, err := transport.LoadIdentity(home)
	if err != nil {
		return nil, err
	}
	p.identity = time.Now()
	conn, err := transport.Dial(ctx, addr, id, peer, transport.Config{})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	p.dialed = time.Now()
	s := &ntcsync.Sender{StateDir: filepath.Join(home, "push"), Node: id.ID().String(), Streams: 4, Conns: 8,
		Dial: func(ctx context.Context) (*transport.Conn, error) {
			return transport.Dial(ctx, addr, id, peer, transport.Config{})
		},
		Logger: slog.New(onMessage{msg: "offered", do: func() { p.offered = time.Now() }})}
	name := filepath.Base(img)
	_, prev := s.LastAcked(peer, name)
	var changed []chunk.Range
	for _, e := range ext {
		changed = append(changed, chunk.Range{Off: e.Off, Len: e.Len})
	}
	fimg, err := ntcsync.IndexFile(ctx, img, name, prev[name], changed, nil)
	if err != nil {
		return nil, err
	}
	defer fimg.Close()
	p.indexed = time.Now()
	res, err := s.Push(ctx, conn, &ntcsync.Version{Set: name, Images: []ntcsync.Image{fimg.Image}})
	if err != nil {
		return nil, err
	}
	p.committed = time.Now()
	p.digest = res.Digest.Short()
	return p, nil
}

// matchReceiverLog fills in the receiver's side of each push from serve's
// JSON log, by the version's digest.
func matchReceiverLog(log string, runs []*pushPhases) error {
	byDigest := map[string]*pushPhases{}
	for _, p := range runs {
		byDigest[p.digest] = p
	}
	var cur *pushPhases
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var l struct {
			Time   time.Time     `json:"time"`
			Msg    string        `json:"msg"`
			Digest string        `json:"digest"`
			Took   time.Duration `json:"took"`
			// committed's phases
			StoreSynced   time.Duration `json:"store_synced_in"`
			Committed     time.Duration `json:"committed_in"`
			ImagesWritten time.Duration `json:"images_written_in"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch {
		case l.Msg == "push offered":
			cur = byDigest[l.Digest]
			if cur != nil {
				cur.rcvOffer = l.Time
			}
		case cur != nil && l.Msg == "round received":
			cur.rcvData = l.Time
			cur.round = l.Took
		case cur != nil && l.Msg == "committed":
			cur.rcvCommit = l.Time
			cur.storeSync, cur.commit, cur.materialise = l.StoreSynced, l.Committed, l.ImagesWritten
			cur = nil
		}
	}
	for _, p := range runs {
		if p.rcvOffer.IsZero() || p.rcvData.IsZero() || p.rcvCommit.IsZero() {
			return fmt.Errorf("the receiver's log lacks push %s:\n%s", p.digest, log)
		}
	}
	return nil
}

// syncFS flushes dirty pages, so that no push waits for an earlier write.
func syncFS(tb testing.TB) {
	tb.Helper()
	if err := exec.Command("sync").Run(); err != nil {
		tb.Fatal(err)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkSmallPushRTT: `ntc push --changed` of a 1% change of a 128 MiB
// image over a path of 40 ms round trip (bench's dsl without its rate
// limit and loss: transporttest.Delay on loopback), alternately resuming
// the last push's session (its hello and offer leave with the first
// packet) and with the session tickets removed (a full handshake first),
// in the same run. Besides the process's wall time it reports when the
// receiver had parsed the offer (its log), from the process's start:
// that is where the round trip is saved, and the data's time does not
// blur it. Medians of the rounds. Early data needs a push that sends it
// (transport.Config.EarlyData) and a serve that takes it
// (transport.Config.Allow0RTT, which the receiver must support by
// confirming the handshake before it stores or commits); without, the
// resumed session saves only the certificates.
//
//	go test -run '^$' -bench SmallPushRTT -benchtime 9x ./bench/
func BenchmarkSmallPushRTT(b *testing.B) {
	ctx := b.Context()
	bin := buildNTC(b)
	p := newPair(b, bin, "--log-format", "json")
	img := filepath.Join(b.TempDir(), "disk.img")
	if err := WriteRandom(img, *smallSize, 1); err != nil {
		b.Fatal(err)
	}
	if _, err := p.office.Push(ctx, p.srv.Addr, p.home.ID, img); err != nil {
		b.Fatal(err)
	}
	srvAddr, err := net.ResolveUDPAddr("udp", p.srv.Addr)
	if err != nil {
		b.Fatal(err)
	}
	const oneWay = 20 * time.Millisecond
	path := transporttest.Delay(b, srvAddr, oneWay).String()
	type run struct {
		resumed bool
		start   time.Time
		wall    float64
		digest  string
	}
	var runs []*run
	seed := uint64(100)
	push := func(resumed bool) {
		if !resumed {
			if err := os.RemoveAll(filepath.Join(p.office.Home, "sessions")); err != nil {
				b.Fatal(err)
			}
		}
		seed++
		ext, _, err := RewriteScattered(img, 0.01, 64<<10, seed)
		if err != nil {
			b.Fatal(err)
		}
		syncFS(b)
		r := &run{resumed: resumed, start: time.Now()}
		res, err := p.office.Push(ctx, path, p.home.ID, img, "--changed", Ranges(ext))
		if err != nil {
			b.Fatal(err)
		}
		r.wall, r.digest = ms(res.Wall), res.Digest
		runs = append(runs, r)
	}
	push(true) // leaves a ticket
	runs = nil
	for b.Loop() {
		push(true)
		push(false)
	}
	p.srv.Stop()
	offers := offerTimes(p.srv.Log())
	var wall, offer [2][]float64 // [full, resumed]
	for _, r := range runs {
		k := 0
		if r.resumed {
			k = 1
		}
		at, ok := offers[r.digest[:min(12, len(r.digest))]]
		if !ok {
			b.Fatalf("the receiver's log has no offer of %s", r.digest)
		}
		wall[k] = append(wall[k], r.wall)
		offer[k] = append(offer[k], ms(at.Sub(r.start)))
	}
	rtt := ms(2 * oneWay)
	b.ReportMetric(median(wall[1]), "resumed-ms")
	b.ReportMetric(median(wall[0]), "full-ms")
	b.ReportMetric(median(offer[1]), "resumed-offer-ms")
	b.ReportMetric(median(offer[0]), "full-offer-ms")
	b.ReportMetric((median(offer[0])-median(offer[1]))/rtt, "offer-RTTs-saved")
	b.ReportMetric(0, "ns/op")
}

// offerTimes returns when serve's JSON log says it parsed each push's
// offer, by the version's short digest.
func offerTimes(log string) map[string]time.Time {
	out := map[string]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var l struct {
			Time   time.Time `json:"time"`
			Msg    string    `json:"msg"`
			Digest string    `json:"digest"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "push offered" {
			out[l.Digest] = l.Time
		}
	}
	return out
}

// onMessage is a log handler that calls do at each record whose message is
// msg, and drops every record.
type onMessage struct {
	msg string
	do  func()
}

func (h onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h onMessage) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h onMessage) WithGroup(string) slog.Handler            { return h }
func (h onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.do()
	}
	return nil
}
