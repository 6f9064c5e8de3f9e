package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/quic-go/quic-go"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// The sync protocol's frame types, written here by hand: the hostile
// client below speaks the wire format, not package sync's code.
const (
	wHello    = 1
	wBase     = 2
	wOffer    = 5
	wWant     = 6
	wChunk    = 7
	wSent     = 8
	wError    = 10
	wOps      = 11
	wOfferEnd = 12
	wData     = 13
	wCands    = 14
)

func uv(b []byte, v uint64) []byte  { return binary.AppendUvarint(b, v) }
func str(b []byte, s string) []byte { return append(uv(b, uint64(len(s))), s...) }

func frame(typ byte, payload []byte) []byte {
	return append(uv([]byte{typ}, uint64(len(payload))), payload...)
}

// helloFrame says hello in protocol 2, followed by no candidate bases.
func helloFrame(set string) []byte {
	p := str(nil, "NTC-SYNC")
	p = uv(p, 2)
	return append(frame(wHello, str(p, set)), frame(wCands, uv(uv(nil, 0), 0))...)
}

// offerFrame offers a first version of set with one image, based on
// nothing, under the digest of the version whose image's entries are
// entries (made at Unix time 0 by no node); with entries nil, under a
// made-up digest.
func offerFrame(set, name string, size int64, p chunk.Params, entries []chunk.Entry) []byte {
	d := repo.Digest{1}
	if entries != nil {
		v := repo.Version{Set: set, Created: time.Unix(0, 0).UTC(), Images: []repo.Image{{Name: name}}}
		if err := v.Seal([]*chunk.Index{{Params: p, Size: size, Entries: entries}}, nil); err != nil {
			panic(err)
		}
		d = v.Digest
	}
	b := append([]byte(nil), d[:]...)
	b = append(b, make([]byte, 32)...) // no parent
	b = str(b, "")                     // no node
	b = binary.BigEndian.AppendUint64(b, 0)
	b = append(b, make([]byte, 32)...) // no base
	b = uv(b, 0)                       // no links
	b = uv(b, 0)                       // no metadata
	b = uv(b, 1)
	b = str(b, name)
	b = uv(b, uint64(size))
	b = uv(b, uint64(p.Kind))
	b = uv(b, uint64(p.AvgBits))
	b = binary.BigEndian.AppendUint64(b, uint64(p.Pol))
	b = uv(b, uint64(p.MinSize))
	b = uv(b, uint64(p.MaxSize))
	b = uv(b, 0)
	return frame(wOffer, b)
}

// insertFrame is an ops frame inserting entries, each encoded by enc.
func insertFrame(n int, entry []byte) []byte {
	b := uv(nil, 0) // image 0
	b = uv(b, 1)    // one op
	b = uv(b, 2)    // insert
	b = uv(b, uint64(n))
	b = append(b, bytes.Repeat(entry, n)...)
	return frame(wOps, b)
}

// rawPeer dials serve with plain quic-go from its own address, as an
// attacker with a copy of an identity (or none allowed) would.
type rawPeer struct {
	tr  *quic.Transport
	tls *tls.Config
	to  *net.UDPAddr
}

func newRawPeer(t testing.TB, home, srcIP, to string) *rawPeer {
	t.Helper()
	id, err := transport.LoadIdentity(home)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(srcIP)})
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp4", to)
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	return &rawPeer{tr: tr, to: raddr, tls: &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{id.TLSCertificate()},
		NextProtos: []string{transport.ALPN}, InsecureSkipVerify: true,
	}}
}

func (p *rawPeer) dial(ctx context.Context) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.tr.Dial(ctx, p.to, p.tls, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: time.Second})
}

// push opens a control stream and says hello; it returns the stream and
// the session token of the receiver's base.
func (p *rawPeer) push(t *testing.T, ctx context.Context, set string) (*quic.Conn, *quic.Stream, *bufio.Reader, []byte) {
	t.Helper()
	c, err := p.dial(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(helloFrame(set)); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(st)
	typ, payload, err := readFrame(rd)
	if err != nil || typ != wBase || len(payload) < 16 {
		t.Fatalf("base: type %d, %v", typ, err)
	}
	return c, st, rd, payload[len(payload)-16:]
}

func readFrame(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1<<20 {
		return 0, nil, fmt.Errorf("frame length %d: %v", n, err)
	}
	p := make([]byte, n)
	_, err = io.ReadFull(r, p)
	return typ, p, err
}

// servedProcess is 'ntc serve' with its log collected as it is written.
type servedProcess struct {
	addr string
	pid  int
	mu   gosync.Mutex
	log  bytes.Buffer
	more chan struct{}
}

func startServe(t testing.TB, n node, store string, flags []string, allow ...string) *servedProcess {
	t.Helper()
	c := n.cmd(context.Background(), serveArgs(store, flags, allow)...)
	stdout, _ := c.StdoutPipe()
	stderr, _ := c.StderrPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	s := &servedProcess{pid: c.Process.Pid, more: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			select {
			case s.more <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		<-done
		c.Wait()
		if t.Failed() {
			t.Logf("serve's log:\n%s", s.logText())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed nothing: %v", err)
	}
	var ev listeningJSON
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("serve printed %q: %v", line, err)
	}
	s.addr = ev.Addr
	return s
}

func (s *servedProcess) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// mark is where serve's log is now: waitLog from it looks only at what
// was logged since.
func (s *servedProcess) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Len()
}

// waitLog waits for a line of serve's log after from matching re.
func (s *servedProcess) waitLog(t *testing.T, from int, re string, limit time.Duration) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(limit)
	for {
		if m := rx.FindString(s.logText()[from:]); m != "" {
			return m
		}
		select {
		case <-s.more:
		case <-deadline:
			t.Fatalf("serve logged nothing matching %q in %s", re, limit)
		}
	}
}

// peakRSS is serve's peak resident memory (VmHWM).
func (s *servedProcess) peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// TestServeWithstandsHostilePeers drives a real 'ntc serve' with an
// allowed peer that sends what costs memory and time (amplifying frames,
// zstd bombs, stalls, many connections) and with floods of handshakes,
// while an honest peer pushes; serve stays under its memory ceiling, logs
// the refusals with the peers' IDs, and the honest pushes commit.
func TestServeWithstandsHostilePeers(t *testing.T) {
	const ceiling = 256 << 20
	office, home, evil, stranger := newNode(t), newNode(t), newNode(t), newNode(t)
	store := t.TempDir()
	srv := startServe(t, home, store, []string{"--stall-timeout", "2s", "--keep", "1"}, office.id, evil.id)
	ctx := t.Context()
	evilID := regexp.QuoteMeta(evil.id)

	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 8<<20, 11)
	honest := func(version uint64) {
		t.Helper()
		res, err := push(t, ctx, office, srv.addr, home.id, img)
		if err != nil {
			t.Fatalf("honest push: %v", err)
		}
		if res.Version != version {
			t.Fatalf("honest push committed v%d, want v%d", res.Version, version)
		}
	}
	honest(1)

	mark := srv.mark()
	// Stalled: hello on the honest peer's set, then silence. It holds the
	// set's lock (and the collector) until the stall deadline.
	p := newRawPeer(t, evil.home, "127.0.0.2", srv.addr)
	stallConn, _, _, _ := p.push(t, ctx, "disk.img")
	defer stallConn.CloseWithError(0, "")
	copy(data[1<<20:], bytes.Repeat([]byte{7}, 1<<20))
	os.WriteFile(img, data, 0o644)
	t0 := time.Now()
	honest(2) // waits for the stalled push to be ended
	if waited := time.Since(t0); waited < time.Second {
		t.Errorf("the honest push took %s: did the stalled one hold the set at all?", waited)
	}
	srv.waitLog(t, mark, `msg="push failed" component=serve peer=`+evilID+` addr=127.0.0.2:[0-9]+ err=".*stopped making progress`, 10*time.Second)
	// v1 was removed; its chunks go once no push is under way.
	srv.waitLog(t, mark, "collected garbage", 20*time.Second)

	// Amplification: one 8 MiB ops frame of one-byte zero entries.
	mark = srv.mark()
	c, st, rd, _ := p.push(t, ctx, "amplify")
	n := 8<<20 - 16
	st.Write(offerFrame("amplify", "zeros", int64(n), chunk.DefaultCDC(), []chunk.Entry{{Length: int64(n), Zero: true}}))
	st.Write(insertFrame(n, []byte{3})) // length 1, zero
	st.Write(frame(wOfferEnd, nil))
	if typ, _, err := readFrame(rd); err != nil || typ != 9 { // committed
		t.Fatalf("amplified offer: frame %d, %v", typ, err)
	}
	c.CloseWithError(0, "")
	if x, err := chunk.ReadIndexFile(filepath.Join(store, "sets", "amplify", "versions", "000001", "zeros.idx")); err != nil || len(x.Entries) != 1 {
		t.Fatalf("the zero entries were not merged: %v", err)
	}

	mark = srv.mark()
	// One-byte data entries, 64 MiB of them: more than the memory a
	// peer may hold. Refused, the connection's other costs released.
	c, st, rd, _ = p.push(t, ctx, "entries")
	st.Write(offerFrame("entries", "tiny", 8<<30, chunk.DefaultCDC(), nil))
	entry := append([]byte{2}, make([]byte, 32)...) // length 1, an ID
	big := insertFrame((8<<20)/len(entry), entry)
	go func() {
		for range 8 {
			if _, err := st.Write(big); err != nil {
				return
			}
		}
	}()
	if typ, p, err := readFrame(rd); err != nil || typ != wError || !bytes.Equal(p, []byte{11}) {
		t.Fatalf("64 MiB of one-byte entries: frame %d %x, %v; want error 11 (limit)", typ, p, err)
	}
	c.CloseWithError(0, "")
	srv.waitLog(t, mark, `msg="push failed" component=serve peer=`+evilID+` addr=\S+ err=".*limit.*memory`, 10*time.Second)

	// A frame announcing 16 MiB that never comes.
	mark = srv.mark()
	c, st, _, _ = p.push(t, ctx, "announce")
	st.Write(uv([]byte{wOffer}, 16<<20-1))
	srv.waitLog(t, mark, `msg="push failed" component=serve peer=`+evilID+` addr=\S+ err=".*stopped making progress`, 10*time.Second)
	c.CloseWithError(0, "")

	mark = srv.mark()
	// zstd bombs on 8 data streams: a 200-byte chunk whose frame inflates
	// to 256 MiB, and a 4 KiB one declaring 16 MiB.
	var zeros bytes.Buffer
	zw, _ := zstd.NewWriter(&zeros, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	zw.Write(make([]byte, 256<<20))
	zw.Close()
	bomb := zeros.Bytes()
	declared, _ := zstd.NewWriter(nil)
	bomb2 := declared.EncodeAll(make([]byte, 16<<20), nil)
	for _, tc := range []struct {
		size int64
		bomb []byte
	}{{200, bomb}, {4096, bomb2}} {
		set := fmt.Sprintf("bomb%d", tc.size)
		c, st, rd, tok := p.push(t, ctx, set)
		id := chunk.Sum(bytes.Repeat([]byte{1}, int(tc.size)))
		st.Write(offerFrame(set, "ram", tc.size, chunk.Pages(), []chunk.Entry{{Length: tc.size, ID: id}}))
		st.Write(insertFrame(1, append(uv(nil, uint64(tc.size)<<1), id[:]...)))
		st.Write(frame(wOfferEnd, nil))
		for round := 1; ; round++ {
			typ, _, err := readFrame(rd)
			if err != nil || typ == wError {
				break // refused: damaged three times, or sent twice
			}
			if typ != wWant {
				t.Fatalf("bomb round %d: frame %d", round, typ)
			}
			st.Write(frame(wSent, uv(uv(nil, uint64(round)), 8)))
			for range 8 {
				ds, err := c.OpenStreamSync(ctx)
				if err != nil {
					break // the receiver closed the connection
				}
				ds.Write(frame(wData, append(uv(nil, uint64(round)), tok...)))
				ds.Write(frame(wChunk, append(uv(nil, 0), append([]byte{1}, tc.bomb...)...)))
				ds.Close()
			}
		}
		c.CloseWithError(0, "")
	}
	srv.waitLog(t, mark, `msg="push failed" component=serve peer=`+evilID+` addr=\S+ err=".*(damaged|sent twice)`, 10*time.Second)

	// Many connections from the allowed attacker, held open.
	mark = srv.mark()
	var held []*quic.Conn
	refusedConn := 0
	for range 12 {
		c, err := p.dial(ctx)
		if err != nil {
			refusedConn++
			continue
		}
		held = append(held, c)
	}
	srv.waitLog(t, mark, `level=WARN msg="refused a peer" component=serve peer=`+evilID+` addr=127.0.0.2:[0-9]+ err=".*too many connections`, 10*time.Second)

	mark = srv.mark()
	// Handshake floods: the attacker from another address, and a peer
	// not allowed. The honest peer (127.0.0.1) pushes meanwhile.
	flood := newRawPeer(t, evil.home, "127.0.0.3", srv.addr)
	unknown := newRawPeer(t, stranger.home, "127.0.0.4", srv.addr)
	var wg gosync.WaitGroup
	for _, fp := range []*rawPeer{flood, unknown} {
		wg.Go(func() {
			for range 200 {
				if c, err := fp.dial(ctx); err == nil {
					c.CloseWithError(0, "")
				}
			}
		})
	}
	copy(data[3<<20:], bytes.Repeat([]byte{8}, 1<<20))
	os.WriteFile(img, data, 0o644)
	honest(3)
	wg.Wait()
	for _, c := range held {
		c.CloseWithError(0, "")
	}
	srv.waitLog(t, mark, `level=WARN msg="refused a connection" component=serve addr=127.0.0.3:[0-9]+ err=".*too many connection attempts`, 5*time.Second)
	srv.waitLog(t, mark, `msg="refused a peer" component=serve peer=`+regexp.QuoteMeta(stranger.id)+` addr=127.0.0.4:[0-9]+ err=".*peer not allowed`, 5*time.Second)

	// After all that, a push still completes, and serve stayed under its
	// ceiling.
	copy(data[5<<20:], bytes.Repeat([]byte{9}, 1<<20))
	os.WriteFile(img, data, 0o644)
	honest(4)
	got, err := os.ReadFile(filepath.Join(store, "sets", "disk.img", "images", "disk.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the honest peer's image differs (%v)", err)
	}
	rss := srv.peakRSS(t)
	t.Logf("serve's peak RSS %d MiB (ceiling %d MiB); %d of 12 extra connections refused at dial", rss>>20, ceiling>>20, refusedConn)
	if rss > ceiling {
		t.Errorf("serve's peak RSS %d MiB is over its %d MiB ceiling", rss>>20, ceiling>>20)
	}
	if lines := strings.Count(srv.logText(), "\n"); lines > 400 {
		t.Errorf("serve logged %d lines: refusals are not rate limited", lines)
	}
}

// cpuNanos is the CPU time a process's threads have used, from each
// thread's schedstat (nanoseconds; Go's threads live as long as it).
func cpuNanos(tb testing.TB, pid int) int64 {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("no threads of %d: %v", pid, err)
	}
	var sum int64
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // a thread that just ended
		}
		ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		sum += ns
	}
	return sum
}

// BenchmarkServeHandshakes measures the CPU a real 'ntc serve' spends per
// handshake it refuses (a peer not allowed: the whole TLS handshake; an
// address over its rate: refused at its first packet) beside one it
// accepts, from serve's own CPU time.
//
//	go test -run '^$' -bench ServeHandshakes -benchtime 300x ./cmd/ntc/
func BenchmarkServeHandshakes(b *testing.B) {
	for _, tc := range []struct {
		name  string
		rate  string
		who   string // which identity dials
		check func(err error) bool
	}{
		{"accepted", "1000000", "office", func(err error) bool { return err == nil }},
		{"refused-unknown-peer", "1000000", "stranger", func(err error) bool { return err != nil }},
		{"refused-over-rate", "0.001", "office", func(err error) bool { return err != nil }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			office, home, stranger := newNode(b), newNode(b), newNode(b)
			srv := startServe(b, home, b.TempDir(), []string{"--handshakes-per-second", tc.rate, "--max-conns", "16"}, office.id)
			who := office
			if tc.who == "stranger" {
				who = stranger
			}
			p := newRawPeer(b, who.home, "127.0.0.1", srv.addr)
			if tc.name == "refused-over-rate" {
				p.dial(b.Context()) // spends the burst
				p.dial(b.Context())
			}
			before := cpuNanos(b, srv.pid)
			for b.Loop() {
				c, err := p.dial(b.Context())
				if err == nil && tc.who == "stranger" {
					// The refusal reaches a TLS 1.3 client after its
					// handshake: wait for it.
					_, err = c.AcceptStream(b.Context())
				}
				if !tc.check(err) {
					b.Fatalf("dial: %v", err)
				}
				if c != nil {
					c.CloseWithError(0, "")
				}
			}
			used := cpuNanos(b, srv.pid) - before
			b.ReportMetric(float64(used)/float64(b.N)/1e3, "serve-µs-CPU/handshake")
		})
	}
}
