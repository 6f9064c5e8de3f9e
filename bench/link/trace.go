package link

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// maxTrace bounds the packets one trace records per direction.
const maxTrace = 1 << 20

// Packet is one packet the relay read while a trace was on: what a
// timeline of a transfer needs, without the payload.
type Packet struct {
	// At is when the relay read it, since the trace started.
	At time.Duration
	// AB is true for packets from A to B.
	AB bool
	// Len is the IP length; Proto the IP protocol (6 TCP, 17 UDP).
	Len   int
	Proto uint8
	// SrcPort and DstPort are the TCP or UDP ports.
	SrcPort, DstPort uint16
	// First is the first byte of the UDP payload (QUIC: a long header,
	// used by the handshake, has its top bit set) or the TCP flags.
	First uint8
	// Dropped is set when the link lost it (Profile.Loss) or its queue
	// overflowed.
	Dropped bool
}

// trace records packets of both directions.
type trace struct {
	mu    sync.Mutex
	start time.Time
	pkts  []Packet
}

func (t *trace) add(ab bool, b []byte, dropped bool) {
	p := Packet{At: time.Since(t.start), AB: ab, Len: len(b), Dropped: dropped}
	parsePacket(&p, b)
	t.mu.Lock()
	if len(t.pkts) < 2*maxTrace {
		t.pkts = append(t.pkts, p)
	}
	t.mu.Unlock()
}

// parsePacket fills in the protocol, ports and first byte of an IPv4
// packet; other packets keep zeros.
func parsePacket(p *Packet, b []byte) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	p.Proto = b[9]
	if len(b) < ihl+4 {
		return
	}
	p.SrcPort = binary.BigEndian.Uint16(b[ihl:])
	p.DstPort = binary.BigEndian.Uint16(b[ihl+2:])
	switch p.Proto {
	case 17:
		if len(b) > ihl+8 {
			p.First = b[ihl+8]
		}
	case 6:
		if len(b) > ihl+13 {
			p.First = b[ihl+13]
		}
	}
}

// StartTrace starts recording every packet the relay reads (up to about a
// million per direction), replacing a trace already running.
func (l *Link) StartTrace() {
	t := &trace{start: time.Now()}
	for _, d := range l.dirs {
		if d != nil {
			d.trace.Store(t)
		}
	}
}

// RestartTrace drops what a running trace recorded and starts it again
// from now, so that its times count from the start of what is measured. It
// does nothing when no trace runs.
func (l *Link) RestartTrace() {
	for _, d := range l.dirs {
		if d != nil && d.trace.Load() != nil {
			l.StartTrace()
			return
		}
	}
}

// StopTrace stops recording and returns the packets in the order they
// were read.
func (l *Link) StopTrace() []Packet {
	var t *trace
	for _, d := range l.dirs {
		if d != nil {
			if x := d.trace.Swap(nil); x != nil {
				t = x
			}
		}
	}
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := slices.Clone(t.pkts)
	slices.SortStableFunc(out, func(a, b Packet) int { return int(a.At - b.At) })
	return out
}

// WriteTrace writes packets as tab-separated lines: milliseconds, direction
// (A>B or B>A), IP length, protocol, source and destination port, first
// byte in hex, and "drop" for packets the link dropped.
func WriteTrace(w io.Writer, pkts []Packet) error {
	if _, err := fmt.Fprintln(w, "ms\tdir\tlen\tproto\tsrc\tdst\tfirst\tfate"); err != nil {
		return err
	}
	for _, p := range pkts {
		dir := "B>A"
		if p.AB {
			dir = "A>B"
		}
		fate := ""
		if p.Dropped {
			fate = "drop"
		}
		if _, err := fmt.Fprintf(w, "%.3f\t%s\t%d\t%d\t%d\t%d\t%02x\t%s\n", float64(p.At)/1e6, dir, p.Len, p.Proto,
			p.SrcPort, p.DstPort, p.First, fate); err != nil {
			return err
		}
	}
	return nil
}
