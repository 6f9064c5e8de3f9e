package link

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func testShaper(p Profile) *shaper { return newShaper(p, rand.New(rand.NewPCG(1, 2))) }

func TestShaperSerializesAtTheRateThenDelays(t *testing.T) {
	// 1500 bytes at 12 Mbit/s take 1 ms on the wire.
	s := testShaper(Profile{Rate: 12 * Mbit, RTT: 20 * time.Millisecond, QueueBytes: 1 << 20})
	for i := range 10 {
		due, f := s.admit(0, 1500)
		want := time.Duration(i+1)*time.Millisecond + 10*time.Millisecond
		if f != deliver || due != want {
			t.Fatalf("packet %d of a burst: %v at %v, want delivered at %v", i, f, due, want)
		}
	}
	// After the burst has drained, a packet waits only for its own serialization.
	if due, _ := s.admit(time.Second, 1500); due != time.Second+11*time.Millisecond {
		t.Errorf("packet on an idle link leaves at %v, want %v", due, time.Second+11*time.Millisecond)
	}
}

func TestShaperDropsTailWhenTheQueueIsFull(t *testing.T) {
	s := testShaper(Profile{Rate: 12 * Mbit, QueueBytes: 10 * 1500})
	var fates []fate
	for range 15 {
		_, f := s.admit(0, 1500)
		fates = append(fates, f)
	}
	want := append(slices.Repeat([]fate{deliver}, 10), slices.Repeat([]fate{overflow}, 5)...)
	if !slices.Equal(fates, want) {
		t.Errorf("a burst of 15 into a queue of 10 packets: %v, want %v", fates, want)
	}
	// 2.5 ms later 2.5 packets have left: two more fit.
	_, f1 := s.admit(2500*time.Microsecond, 1500)
	_, f2 := s.admit(2500*time.Microsecond, 1500)
	_, f3 := s.admit(2500*time.Microsecond, 1500)
	if f1 != deliver || f2 != deliver || f3 != overflow {
		t.Errorf("after 2.5 packet times: %v %v %v, want two delivered, one overflow", f1, f2, f3)
	}
}

func TestShaperDefaultQueueIsOneBDP(t *testing.T) {
	for _, tc := range []struct {
		p    Profile
		want int64
	}{
		{Profile{Rate: 20 * Mbit, RTT: 40 * time.Millisecond}, 100_000},
		{Profile{Rate: 100 * Mbit, RTT: 80 * time.Millisecond}, 1_000_000},
		{Profile{Rate: 20 * Mbit, RTT: time.Millisecond}, MinQueueBytes},
		{Profile{Rate: 20 * Mbit, RTT: time.Millisecond, QueueBytes: 3000}, 3000},
		{Profile{RTT: time.Second}, 0},
	} {
		if got := tc.p.queueBytes(); got != tc.want {
			t.Errorf("%v: queue %d bytes, want %d", tc.p, got, tc.want)
		}
	}
}

func TestShaperLosesTheConfiguredShare(t *testing.T) {
	const n, loss = 1_000_000, 0.01
	s := testShaper(Profile{Loss: loss})
	lostN := 0
	for range n {
		if _, f := s.admit(0, 100); f == lost {
			lostN++
		}
	}
	mean := n * loss
	if bound := 5 * math.Sqrt(mean*(1-loss)); math.Abs(float64(lostN)-mean) > bound {
		t.Errorf("lost %d of %d, want %.0f ± %.0f", lostN, n, mean, bound)
	}
}

func TestShaperJitter(t *testing.T) {
	const delay, jitter = 10 * time.Millisecond, 5 * time.Millisecond
	for _, reorder := range []bool{false, true} {
		s := testShaper(Profile{RTT: 2 * delay, Jitter: jitter, Reorder: reorder})
		var dues []time.Duration
		for i := range 1000 {
			now := time.Duration(i) * 100 * time.Microsecond
			due, _ := s.admit(now, 100)
			if d := due - now; d < delay-jitter || (reorder && d > delay+jitter) {
				t.Fatalf("reorder %v: packet %d delayed %v, want %v ± %v", reorder, i, d, delay, jitter)
			}
			dues = append(dues, due)
		}
		if sorted := slices.IsSorted(dues); sorted == reorder {
			t.Errorf("reorder %v: departures in order: %v", reorder, sorted)
		}
	}
}

func TestFlightPopsInDueThenArrivalOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var fl flight
	var want []packet
	for i := range 1000 {
		p := packet{due: time.Duration(rng.IntN(50)), seq: uint64(i)}
		fl.push(p)
		want = append(want, p)
	}
	slices.SortStableFunc(want, func(a, b packet) int { return int(a.due - b.due) })
	for i, w := range want {
		if got := fl.pop(); got.due != w.due || got.seq != w.seq {
			t.Fatalf("pop %d: (%v, %d), want (%v, %d)", i, got.due, got.seq, w.due, w.seq)
		}
	}
	if len(fl) != 0 {
		t.Errorf("%d packets left", len(fl))
	}
}

func TestProfiles(t *testing.T) {
	for _, name := range []string{"dsl", "wan", "lan"} {
		p, err := ProfileByName(name)
		if err != nil || p.Name != name || p.Validate() != nil {
			t.Errorf("ProfileByName(%q) = %v, %v; valid: %v", name, p, err, p.Validate())
		}
	}
	if _, err := ProfileByName("adsl"); !errors.Is(err, ErrUnknownProfile) {
		t.Errorf("ProfileByName(adsl): %v, want ErrUnknownProfile", err)
	}
	dsl, _ := ProfileByName("dsl")
	if got, want := dsl.String(), "dsl (20 Mbit/s, 40ms RTT, 0.1% loss)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, bad := range []Profile{
		{Rate: -1},
		{RTT: -time.Millisecond},
		{Loss: 1},
		{Loss: math.NaN()},
		{MTU: 100},
		{QueueBytes: 1000},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v is valid", bad)
		}
	}
}
