package link

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests drive one direction of the relay by hand, on a simulated
// clock: packets arrive when the test says, the writer wakes exactly when
// it armed its timer, and what it writes goes through a real datagram
// socket and is read back. Nothing depends on how fast the machine is.

// fakeWaker is the writer's timer on the simulated clock: set records when
// it fires.
type fakeWaker struct {
	now *time.Duration
	at  time.Duration // disarmed when it will not fire
}

func (w *fakeWaker) set(d time.Duration) error {
	w.at = *w.now + max(d, 1) // as the timerfd: 0 would disarm it
	return nil
}

func (w *fakeWaker) wait() error { panic("the simulation does not wait") }

// departure is a packet the writer wrote: when, and the number the
// simulation gave it on arrival.
type departure struct {
	at time.Duration
	n  int
}

// sim is one direction of a link under simulated time.
type sim struct {
	tb     testing.TB
	d      *direction
	now    time.Duration
	waker  *fakeWaker
	peer   int             // the far end of the socket the writer writes to
	sent   []time.Duration // arrival time of packet n
	out    []departure
	closed atomic.Bool
}

func newSim(tb testing.TB, p Profile, seed uint64) *sim {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	// Room for a whole batch of the largest packets.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
		tb.Fatal(err)
	}
	out := os.NewFile(uintptr(fds[0]), "sim-out")
	tb.Cleanup(func() { out.Close(); unix.Close(fds[1]) })
	rout, err := out.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	s := &sim{tb: tb, peer: fds[1]}
	s.waker = &fakeWaker{now: &s.now, at: disarmed}
	s.d = &direction{
		out:     rout,
		timer:   s.waker,
		sh:      newShaper(p, rand.New(rand.NewPCG(seed, 0))),
		mtu:     p.mtu(),
		closing: &s.closed,
		ab:      true,
		armed:   disarmed,
	}
	return s
}

// offer schedules n packets of size bytes (IP bytes, as the TUN device
// gives them), one every gap from the current time, and runs the relay
// until they have all been delivered or dropped.
func (s *sim) offer(n, size int, gap time.Duration) {
	s.tb.Helper()
	start := s.now
	batch := make([][]byte, 0, batchSize)
	for i := 0; ; {
		next := disarmed
		if i < n {
			next = start + time.Duration(i)*gap
		}
		if next == disarmed && s.waker.at == disarmed {
			break
		}
		if next <= s.waker.at {
			s.now = next
			b := make([]byte, size)
			binary.BigEndian.PutUint64(b, uint64(len(s.sent)))
			s.sent = append(s.sent, s.now)
			if p, ok := s.d.arrive(s.now, b); ok {
				s.d.enqueueAt(s.now, []packet{p})
			}
			i++
			continue
		}
		// The timer fires: the writer writes what is due, batch by batch,
		// until nothing is (then it has armed the timer for the next).
		s.now, s.waker.at = s.waker.at, disarmed
		for {
			var err error
			if batch, err = s.d.takeDue(s.now, batch[:0]); err != nil {
				s.tb.Fatal(err)
			}
			if len(batch) == 0 {
				break
			}
			if err := s.d.write(batch); err != nil {
				s.tb.Fatal(err)
			}
			s.readBack(len(batch), size)
			s.d.release(batch)
		}
	}
	if len(s.d.fl) != 0 {
		s.tb.Fatalf("%d packets left in flight with the timer disarmed", len(s.d.fl))
	}
}

// readBack reads the k packets the writer just wrote from the socket.
func (s *sim) readBack(k, size int) {
	s.tb.Helper()
	buf := make([]byte, size+1)
	for range k {
		m, err := unix.Read(s.peer, buf)
		if err != nil || m != size {
			s.tb.Fatalf("read back a written packet: %d bytes, %v; want %d bytes", m, err, size)
		}
		s.out = append(s.out, departure{at: s.now, n: int(binary.BigEndian.Uint64(buf))})
	}
}

// checkCounters checks that every packet offered is accounted for, once.
func (s *sim) checkCounters(size int) Counters {
	s.tb.Helper()
	c := s.d.counters()
	if c.Received != int64(len(s.sent)) || c.Delivered != int64(len(s.out)) || c.InFlight() != 0 ||
		c.Bytes != c.Delivered*int64(size) || c.Failed != 0 {
		s.tb.Errorf("counters %+v: want %d received, %d delivered of %d bytes, none in flight", c, len(s.sent), len(s.out), size)
	}
	return c
}

func (s *sim) inOrder() bool {
	return slices.IsSortedFunc(s.out, func(a, b departure) int { return a.n - b.n })
}

// TestRelayDeliversAtTheRate offers 30 Mbit/s to a 20 Mbit/s link for a
// (simulated) second: the queue fills, the tail drops, and what leaves
// leaves in order at the link's rate, each packet at least the one-way delay
// after it arrived.
func TestRelayDeliversAtTheRate(t *testing.T) {
	p := Profile{Rate: 20 * Mbit, RTT: 10 * time.Millisecond}
	const size = 1400
	s := newSim(t, p, 1)
	gap := time.Duration(size * 8 * int64(time.Second) / int64(30*Mbit))
	s.offer(int(time.Second/gap), size, gap)
	c := s.checkCounters(size)
	if c.Overflow == 0 || c.Lost != 0 {
		t.Errorf("30 Mbit/s into 20 Mbit/s: %+v; want overflows and no loss", c)
	}
	if !s.inOrder() {
		t.Error("packets left out of order")
	}
	ser := time.Duration(size * 8 * int64(time.Second) / int64(p.Rate))
	for _, o := range s.out {
		if d := o.at - s.sent[o.n]; d < p.RTT/2+ser-early {
			t.Fatalf("packet %d crossed in %v, less than the one-way delay %v and its own serialization %v", o.n, d, p.RTT/2, ser)
		}
	}
	first, last := s.out[0], s.out[len(s.out)-1]
	rate := float64(len(s.out)-1) * size * 8 / (last.at - first.at).Seconds()
	if ratio := rate / float64(p.Rate); math.Abs(ratio-1) > 0.001 {
		t.Errorf("delivered %.3f Mbit/s across a %v link (ratio %.4f)", rate/1e6, p.Rate, ratio)
	}
	// What got through is the rate for the offered second plus a queue.
	want := (float64(p.Rate)*(s.sent[len(s.sent)-1]-s.sent[0]).Seconds()/8 + float64(p.queueBytes())) / size
	if got := float64(c.Delivered); math.Abs(got-want) > 2 {
		t.Errorf("delivered %d packets, want %.0f (a second at the rate plus the queue)", c.Delivered, want)
	}
}

// TestRelayDelaysByHalfTheRTT sends packets on an idle link of each named
// profile (loss off): each crosses in the one-way delay plus its own
// serialization, give or take the writer's early wake-up.
func TestRelayDelaysByHalfTheRTT(t *testing.T) {
	for _, p := range Profiles() {
		t.Run(p.Name, func(t *testing.T) {
			p.Loss = 0
			const size = 60 // a SYN
			s := newSim(t, p, 1)
			s.offer(100, size, 100*time.Millisecond)
			s.checkCounters(size)
			want := p.RTT/2 + time.Duration(size*8*int64(time.Second)/int64(p.Rate))
			for _, o := range s.out {
				if d := o.at - s.sent[o.n]; d < want-early || d > want {
					t.Fatalf("packet %d crossed in %v, want %v (up to %v early)", o.n, d, want, early)
				}
			}
		})
	}
}

// TestRelayLosesTheConfiguredShare: a seeded link loses the configured share
// of packets, the same ones for the same seed, and a lost packet still used
// its share of the rate, so the others leave when they would have anyway.
func TestRelayLosesTheConfiguredShare(t *testing.T) {
	const n, size, loss = 100_000, 100, 0.01
	// Twice the rate into a queue that holds it all: the serializer is
	// never idle, so a packet that skipped it would let the next go sooner.
	p := Profile{Rate: 20 * Mbit, RTT: 20 * time.Millisecond, Loss: loss, QueueBytes: n * size}
	gap := time.Duration(size * 8 * int64(time.Second) / int64(40*Mbit))
	run := func(p Profile, seed uint64) map[int]time.Duration {
		s := newSim(t, p, seed)
		s.offer(n, size, gap)
		c := s.checkCounters(size)
		if c.Overflow != 0 {
			t.Fatalf("%+v: overflow into a queue that holds every packet", c)
		}
		if !s.inOrder() {
			t.Fatal("packets left out of order")
		}
		left := make(map[int]time.Duration, len(s.out))
		for _, o := range s.out {
			left[o.n] = o.at
		}
		return left
	}
	a, again, other, lossless := run(p, 7), run(p, 7), run(p, 8), run(Profile{Rate: p.Rate, RTT: p.RTT, QueueBytes: p.QueueBytes}, 7)
	lost := n - len(a)
	mean := n * loss
	if bound := 5 * math.Sqrt(mean*(1-loss)); math.Abs(float64(lost)-mean) > bound {
		t.Errorf("lost %d of %d, want %.0f ± %.0f", lost, n, mean, bound)
	}
	same := func(x, y map[int]time.Duration) bool {
		if len(x) != len(y) {
			return false
		}
		for k := range x {
			if _, ok := y[k]; !ok {
				return false
			}
		}
		return true
	}
	if !same(a, again) {
		t.Error("the same seed lost other packets")
	}
	if same(a, other) {
		t.Error("another seed lost the same packets")
	}
	if len(lossless) != n {
		t.Fatalf("the lossless link delivered %d of %d", len(lossless), n)
	}
	for k, at := range a {
		if lossless[k] != at {
			t.Fatalf("packet %d left at %v, %v without loss: a lost packet did not use its share of the rate", k, at, lossless[k])
		}
	}
}

// TestRelayJitterKeepsOrderUnlessReorder: with jitter, packets leave in the
// order they came unless the profile allows reordering.
func TestRelayJitterKeepsOrderUnlessReorder(t *testing.T) {
	for _, reorder := range []bool{false, true} {
		p := Profile{RTT: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: reorder}
		s := newSim(t, p, 3)
		s.offer(1000, 100, 100*time.Microsecond)
		s.checkCounters(100)
		if s.inOrder() == reorder {
			t.Errorf("reorder %v: packets left in order: %v", reorder, s.inOrder())
		}
	}
}
