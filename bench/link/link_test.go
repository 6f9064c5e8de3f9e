package link

import (
	"context"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// up brings up a link for the test, or skips when links cannot exist here.
func up(t testing.TB, p Profile) *Link {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	l, err := Up(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// namespaces lists the namespaces `ip netns` knows.
func namespaces(t testing.TB) []string {
	t.Helper()
	names, err := netnsList()
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// slow20 is a 20 Mbit/s link with a short RTT, so that TCP reaches the rate
// within a few round trips, and no loss, so that it keeps it.
var slow20 = Profile{Name: "slow20", Rate: 20 * Mbit, RTT: 10 * time.Millisecond}

// TestTCPCrossesALinkWhole sends 4 MiB over TCP across a shaped link: every
// byte arrives, and the relay counted the data one way and the ACKs the
// other. How fast is BenchmarkRate's question (the relay's timing is
// TestRelay*'s, on a simulated clock).
func TestTCPCrossesALinkWhole(t *testing.T) {
	l := up(t, slow20)
	const size = 4 << 20
	srv, addr := startServer(t, l.B(), "tcp-serve")
	run(t, l.A(), nil, "tcp-send", addr, strconv.Itoa(size))
	var tr transfer
	srv.next(t, &tr)
	st := l.Stats()
	t.Logf("%d bytes in %v; relay %+v", tr.Bytes, tr.Span, st)
	if tr.Bytes != size {
		t.Errorf("server read %d bytes, want %d", tr.Bytes, size)
	}
	if st.AB.Bytes < size || st.BA.Delivered == 0 || st.AB.Lost+st.BA.Lost != 0 {
		t.Errorf("relay counters %+v: want at least %d bytes A to B, ACKs back, no loss", st, size)
	}
}

func TestLossDropsTheConfiguredShare(t *testing.T) {
	const loss, n = 0.01, 20000
	l := up(t, Profile{Name: "lossy", Loss: loss})
	srv, addr := startServer(t, l.B(), "udp-serve", strconv.Itoa(int(300*time.Millisecond)))
	run(t, l.A(), nil, "udp-send", addr, strconv.Itoa(n), "64", strconv.Itoa(int(20*Mbit)))
	var tr transfer
	srv.next(t, &tr)
	st := l.Stats().AB
	if st.Received == 0 {
		t.Fatalf("the relay saw none of %d packets: %+v", n, st)
	}
	// Binomial, over what the relay received (a relay short of CPU misses
	// some: Unread): allow five standard deviations.
	mean := float64(st.Received) * loss
	bound := 5 * math.Sqrt(mean*(1-loss))
	t.Logf("lost %d of %d (%.3f%%), expected %.0f ± %.0f; receiver got %d; %d unread",
		st.Lost, st.Received, 100*float64(st.Lost)/float64(st.Received), mean, bound, tr.Packets, st.Unread)
	if math.Abs(float64(st.Lost)-mean) > bound {
		t.Errorf("the link lost %d of %d packets, want %.0f ± %.0f (1%%)", st.Lost, st.Received, mean, bound)
	}
	if tr.Packets > st.Delivered {
		t.Errorf("receiver got %d datagrams, more than the %d the relay delivered", tr.Packets, st.Delivered)
	}
}

func TestEndpointsHoldOnlyLoopbackAndTheLink(t *testing.T) {
	l := up(t, Profile{Name: "plain"})
	for _, ep := range []Endpoint{l.A(), l.B()} {
		out, err := ip(t.Context(), "-n", ep.Namespace, "-o", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		var devs []string
		for line := range strings.Lines(string(out)) {
			// "2: ntcl0: <POINTOPOINT,…"
			if f := strings.Fields(line); len(f) > 1 {
				devs = append(devs, strings.TrimSuffix(f[1], ":"))
			}
		}
		if want := []string{"lo", ep.Dev}; !slices.Equal(devs, want) {
			t.Errorf("%s has devices %v, want %v", ep.Namespace, devs, want)
		}
		out, err = ip(t.Context(), "-n", ep.Namespace, "-4", "route", "show")
		if err != nil {
			t.Fatal(err)
		}
		if routes := strings.TrimSpace(string(out)); !strings.HasPrefix(routes, subnet.String()+" dev "+ep.Dev) || strings.Contains(routes, "\n") {
			t.Errorf("%s routes %q, want only %s via %s", ep.Namespace, routes, subnet, ep.Dev)
		}
	}
	out, err := ip(t.Context(), "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{l.A().Dev, l.B().Dev} {
		if strings.Contains(string(out), " "+dev+":") {
			t.Errorf("device %s is in this process's namespace", dev)
		}
	}
}

func TestCloseDeletesTheNamespacesAndWhatRunsThere(t *testing.T) {
	l := up(t, Profile{Name: "plain"})
	srv, _ := startServer(t, l.B(), "tcp-serve")
	names := []string{l.A().Namespace, l.B().Namespace}
	for _, ns := range names {
		if !slices.Contains(namespaces(t), ns) {
			t.Fatalf("namespace %s missing while the link is up", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, ns := range names {
		if slices.Contains(namespaces(t), ns) {
			t.Errorf("namespace %s remains after Close", ns)
		}
	}
	if err := srv.cmd.Wait(); err == nil {
		t.Errorf("the server in %s survived Close", l.B().Namespace)
	}
}

func TestCancellingTheContextTearsDown(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	l, err := Up(ctx, Profile{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-l.Done():
	case <-time.After(teardownTimeout):
		t.Fatal("the link outlived its context")
	}
	for _, ns := range []string{l.A().Namespace, l.B().Namespace} {
		if slices.Contains(namespaces(t), ns) {
			t.Errorf("namespace %s remains after cancellation", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close after cancellation: %v", err)
	}
}

func TestUpDeletesWhatADeadProcessLeft(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	// A process that has exited: its PID names the remains of a crash.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	base := namePrefix + strconv.Itoa(dead.Process.Pid) + "-0"
	lock, err := lockLink(base)
	if err != nil {
		t.Fatal(err)
	}
	lock.Close() // as the kernel does when its holder dies
	stale := []string{base + "-a", base + "-b"}
	for _, ns := range stale {
		if _, err := ip(t.Context(), "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ip(context.Background(), "netns", "delete", ns) })
	}
	l := up(t, Profile{Name: "plain"})
	names := namespaces(t)
	for _, ns := range stale {
		if slices.Contains(names, ns) {
			t.Errorf("Up left the stale namespace %s", ns)
		}
	}
	for _, ns := range []string{l.A().Namespace, l.B().Namespace} {
		if !slices.Contains(names, ns) {
			t.Errorf("Up deleted its own namespace %s", ns)
		}
	}
}

// TestUpKeepsLiveLinks: a link whose owner holds its lock survives another
// Up, even when its PID is not this process's.
func TestUpKeepsLiveLinks(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	base := namePrefix + "1-0" // PID 1 never dies, but the lock decides
	lock, err := lockLink(base)
	if err != nil {
		t.Fatal(err)
	}
	ns := base + "-a"
	if _, err := ip(t.Context(), "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ip(context.Background(), "netns", "delete", ns)
		os.Remove(lock.Name())
		lock.Close()
	})
	up(t, Profile{Name: "plain"})
	if !slices.Contains(namespaces(t), ns) {
		t.Errorf("Up deleted %s, whose lock is held", ns)
	}
}

func TestTraceRecordsATCPHandshakeBothWays(t *testing.T) {
	p, err := ProfileByName("lan")
	if err != nil {
		t.Fatal(err)
	}
	l := up(t, p)
	_, addr := startServer(t, l.B(), "tcp-serve")
	l.StartTrace()
	run(t, l.A(), nil, "tcp-connect", addr, "1")
	pkts := l.StopTrace()
	port, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	const syn, ack = 0x02, 0x10
	var sawSyn, sawSynAck bool
	for _, pk := range pkts {
		switch {
		case pk.AB && pk.Proto == 6 && int(pk.DstPort) == port && pk.First&(syn|ack) == syn:
			sawSyn = true
		case !pk.AB && pk.Proto == 6 && int(pk.SrcPort) == port && pk.First&(syn|ack) == syn|ack:
			sawSynAck = sawSyn // after the SYN
		}
	}
	if !sawSyn || !sawSynAck {
		t.Fatalf("trace %+v: want a SYN A>B to port %d, then a SYN-ACK back", pkts, port)
	}
	if again := l.StopTrace(); again != nil {
		t.Errorf("a stopped trace returned %d more packets", len(again))
	}
}

func TestWriteTrace(t *testing.T) {
	var b strings.Builder
	err := WriteTrace(&b, []Packet{{At: 1500 * time.Microsecond, AB: true, Len: 60, Proto: 17, SrcPort: 1, DstPort: 7400, First: 0xc0},
		{At: 2 * time.Millisecond, Len: 52, Proto: 6, SrcPort: 873, DstPort: 2, First: 0x12, Dropped: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := "ms\tdir\tlen\tproto\tsrc\tdst\tfirst\tfate\n1.500\tA>B\t60\t17\t1\t7400\tc0\t\n2.000\tB>A\t52\t6\t873\t2\t12\tdrop\n"
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
}
