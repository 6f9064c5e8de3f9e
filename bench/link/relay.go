package link

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// batchSize bounds how many packets the relay moves per lock or wake-up.
const batchSize = 64

// disarmed is the armed time of a timer that is not going to fire.
const disarmed = time.Duration(math.MaxInt64)

// early is how much before its due time the writer may write a packet. A
// timerfd wakes the writer about 50–80 µs late on these machines; arming it
// this much early centres the error on zero and lets each wake-up write
// the packets due in the next moment too.
const early = 50 * time.Microsecond

// direction relays the packets of one direction: a reader goroutine takes
// packets from the near device, asks the shaper for their fate and queues
// them in flight; a writer goroutine sleeps on a timer until the earliest is
// due and writes what is due to the far device. Buffers circulate between
// the two through a free list, so a steady flow allocates nothing.
type direction struct {
	in, out syscall.RawConn
	timer   waker
	sh      *shaper // reader only
	seq     uint64  // reader only
	mtu     int
	start   time.Time
	closing *atomic.Bool
	ab      bool                  // A to B
	trace   atomic.Pointer[trace] // set while a trace runs

	mu    sync.Mutex
	fl    flight
	free  [][]byte
	armed time.Duration // when the timer fires next; disarmed if it does not
	err   error         // why a goroutine stopped early

	received, delivered, bytes, lost, overflow, failed atomic.Int64
}

// waker wakes the writer: set arms it to fire after d (at once if d is not
// positive), wait blocks until it fires. A wakeTimer in the relay; tests
// drive a direction with a fake one and a fake clock.
type waker interface {
	set(d time.Duration) error
	wait() error
}

func (d *direction) now() time.Duration { return time.Since(d.start) }

// readLoop runs until the link closes. It drains the device on each wake-up
// of the poller and hands packets to the writer in batches.
func (d *direction) readLoop() {
	stash := make([][]byte, 0, batchSize)
	batch := make([]packet, 0, batchSize)
	var readErr error
	for !d.closing.Load() {
		err := d.in.Read(func(fd uintptr) bool {
			for !d.closing.Load() {
				if len(stash) == 0 {
					stash = d.refill(stash)
				}
				buf := stash[len(stash)-1]
				n, err := unix.Read(int(fd), buf[:cap(buf)])
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					d.enqueue(batch)
					batch = batch[:0]
					if err == unix.EAGAIN {
						return false // wait until readable
					}
					readErr = err
					return true
				}
				if n == 0 {
					continue
				}
				p, ok := d.arrive(d.now(), buf[:n])
				if !ok {
					continue // buf is reused for the next packet
				}
				stash = stash[:len(stash)-1]
				batch = append(batch, p)
				if len(batch) == cap(batch) {
					d.enqueue(batch)
					batch = batch[:0]
				}
			}
			return true
		})
		if err == nil {
			err = readErr
		}
		if err != nil {
			d.stop(err)
			return
		}
	}
}

// refill takes free buffers for the reader, allocating a slab when none are
// free.
func (d *direction) refill(stash [][]byte) [][]byte {
	d.mu.Lock()
	k := min(len(d.free), cap(stash))
	stash = append(stash, d.free[len(d.free)-k:]...)
	d.free = d.free[:len(d.free)-k]
	d.mu.Unlock()
	if len(stash) == 0 {
		slab := make([]byte, batchSize*d.mtu)
		for i := range batchSize {
			stash = append(stash, slab[i*d.mtu:(i+1)*d.mtu:(i+1)*d.mtu])
		}
	}
	return stash
}

// arrive takes the packet b the reader read at now: it counts it, asks the
// shaper for its fate and traces it. It returns the packet to put in
// flight, or false if the link dropped it.
func (d *direction) arrive(now time.Duration, b []byte) (packet, bool) {
	d.received.Add(1)
	due, f := d.sh.admit(now, len(b))
	if t := d.trace.Load(); t != nil {
		t.add(d.ab, b, f == lost || f == overflow)
	}
	switch f {
	case lost:
		d.lost.Add(1)
		return packet{}, false
	case overflow:
		d.overflow.Add(1)
		return packet{}, false
	}
	d.seq++
	return packet{due: due, seq: d.seq, buf: b}, true
}

// enqueue puts packets in flight and brings the writer's timer forward if
// one of them is due before it.
func (d *direction) enqueue(batch []packet) {
	d.enqueueAt(d.now(), batch)
}

func (d *direction) enqueueAt(now time.Duration, batch []packet) {
	if len(batch) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range batch {
		d.fl.push(p)
	}
	if head := d.fl[0].due; head < d.armed {
		d.armed = head
		if err := d.timer.set(head - early - now); err != nil {
			d.err = errors.Join(d.err, err)
		}
	}
}

// takeDue moves the packets due by now (early included) from flight to
// batch, as many as fit. When none is due it arms the timer for the next
// packet in flight.
func (d *direction) takeDue(now time.Duration, batch [][]byte) ([][]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.fl) > 0 && d.fl[0].due <= now+early && len(batch) < cap(batch) {
		batch = append(batch, d.fl.pop().buf)
	}
	if len(batch) > 0 {
		return batch, nil
	}
	// Whatever the timer was armed for has been written: arm it for the
	// next packet. With nothing in flight there is no need to disarm it;
	// the reader arms it for the next arrival.
	d.armed = disarmed
	if len(d.fl) == 0 {
		return batch, nil
	}
	d.armed = d.fl[0].due
	return batch, d.timer.set(d.armed - early - now)
}

// release hands the written packets' buffers back to the reader.
func (d *direction) release(batch [][]byte) {
	d.mu.Lock()
	d.free = append(d.free, batch...)
	d.mu.Unlock()
}

// writeLoop runs until the link closes, writing each packet when it is due.
func (d *direction) writeLoop() {
	batch := make([][]byte, 0, batchSize)
	for !d.closing.Load() {
		var err error
		batch, err = d.takeDue(d.now(), batch)
		switch {
		case err != nil:
		case len(batch) == 0:
			err = d.timer.wait() // until the next packet is due
		default:
			err = d.write(batch)
		}
		if err != nil {
			d.stop(err)
			return
		}
		d.release(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// write writes packets to the far device. A packet the device refuses is
// counted as failed; only a closed device stops the writer.
func (d *direction) write(batch [][]byte) error {
	i := 0
	return d.out.Write(func(fd uintptr) bool {
		for i < len(batch) {
			n, err := unix.Write(int(fd), batch[i])
			switch err {
			case unix.EAGAIN:
				return false
			case unix.EINTR:
				continue
			case nil:
				d.delivered.Add(1)
				d.bytes.Add(int64(n))
			default:
				d.failed.Add(1)
			}
			i++
		}
		return true
	})
}

// stop records why a goroutine ended, unless the link is closing anyway.
func (d *direction) stop(err error) {
	if d.closing.Load() {
		return
	}
	d.mu.Lock()
	d.err = errors.Join(d.err, err)
	d.mu.Unlock()
}

func (d *direction) counters() Counters {
	return Counters{
		Received:  d.received.Load(),
		Delivered: d.delivered.Load(),
		Bytes:     d.bytes.Load(),
		Lost:      d.lost.Load(),
		Overflow:  d.overflow.Load(),
		Failed:    d.failed.Load(),
	}
}

// Counters count the packets of one direction of a Link.
type Counters struct {
	Received  int64 // packets the relay read from the sending side
	Delivered int64 // packets written to the receiving side
	Bytes     int64 // IP bytes of the delivered packets, headers included
	Lost      int64 // packets dropped at random (Profile.Loss)
	Overflow  int64 // packets dropped because the queue was full
	Failed    int64 // packets the receiving device refused
	// Unread counts packets the sending side's kernel dropped because its
	// TUN queue (1000 packets) was full: the relay was not reading fast
	// enough, for want of CPU. They never reach Received. A benchmark
	// whose Unread grows measured the relay, not the link.
	Unread int64
}

// InFlight is the number of packets received and not yet delivered or dropped.
func (c Counters) InFlight() int64 {
	return c.Received - c.Delivered - c.Lost - c.Overflow - c.Failed
}

// Stats are a Link's counters by direction.
type Stats struct {
	AB Counters // from A to B
	BA Counters // from B to A
}
