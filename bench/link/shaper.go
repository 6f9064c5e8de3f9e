package link

import (
	"math/rand/v2"
	"time"
)

// fate is what the shaper decides for one packet.
type fate uint8

const (
	deliver  fate = iota
	lost          // random loss on the wire
	overflow      // the queue was full
)

// shaper is one direction's model of the path: a drop-tail queue in front of
// a serializer at the link rate, then a propagation delay with jitter and
// random loss. It only does arithmetic on times (durations since the link
// started), so it is exercised without devices; one goroutine owns it.
type shaper struct {
	rate    BitRate
	queue   int64 // bytes; 0 is unbounded
	delay   time.Duration
	jitter  time.Duration
	reorder bool
	loss    float64
	rng     *rand.Rand

	txFree time.Duration // when the serializer finishes the last accepted packet
	last   time.Duration // departure of the previous packet (FIFO unless reorder)
}

func newShaper(p Profile, rng *rand.Rand) *shaper {
	return &shaper{
		rate:    p.Rate,
		queue:   p.queueBytes(),
		delay:   p.RTT / 2,
		jitter:  p.Jitter,
		reorder: p.Reorder,
		loss:    p.Loss,
		rng:     rng,
	}
}

// admit decides the fate of a packet of size bytes arriving at now and, if it
// is delivered, when it leaves the far end of the link.
func (s *shaper) admit(now time.Duration, size int) (time.Duration, fate) {
	done := now
	if s.rate > 0 {
		start := max(now, s.txFree)
		if s.queue > 0 {
			// Bytes still waiting for the serializer, the packet on it included.
			backlog := float64(start-now) * float64(s.rate) / 8e9
			if backlog+float64(size) > float64(s.queue) {
				return 0, overflow
			}
		}
		done = start + time.Duration(int64(size)*8e9/int64(s.rate))
		s.txFree = done
	}
	if s.loss > 0 && s.rng.Float64() < s.loss {
		return 0, lost
	}
	d := s.delay
	if s.jitter > 0 {
		d += time.Duration(s.rng.Int64N(2*int64(s.jitter)+1)) - s.jitter
		d = max(d, 0)
	}
	due := done + d
	if !s.reorder {
		due = max(due, s.last)
		s.last = due
	}
	return due, deliver
}

// packet is a packet in flight: its bytes and when it leaves the link.
type packet struct {
	due time.Duration
	seq uint64 // arrival order, to keep equal due times FIFO
	buf []byte
}

// flight holds packets in flight ordered by departure, a binary min-heap on
// (due, seq). Without reordering the dues arrive in order and a push is O(1).
type flight []packet

func (h flight) less(i, j int) bool {
	return h[i].due < h[j].due || (h[i].due == h[j].due && h[i].seq < h[j].seq)
}

func (h *flight) push(p packet) {
	*h = append(*h, p)
	q := *h
	for i := len(q) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q[i], q[parent] = q[parent], q[i]
		i = parent
	}
}

func (h *flight) pop() packet {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q[n] = packet{}
	q = q[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && q.less(l, m) {
			m = l
		}
		if r < n && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}
