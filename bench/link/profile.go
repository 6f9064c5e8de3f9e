package link

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// BitRate is a link rate in bits per second of IP packets (headers included,
// no layer-2 framing: a TUN device carries bare IP packets).
type BitRate int64

// Units of BitRate.
const (
	Kbit BitRate = 1000
	Mbit BitRate = 1000 * Kbit
	Gbit BitRate = 1000 * Mbit
)

// String formats r as "20 Mbit/s"; zero is "unlimited".
func (r BitRate) String() string {
	switch {
	case r <= 0:
		return "unlimited"
	case r%Gbit == 0:
		return strconv.FormatInt(int64(r/Gbit), 10) + " Gbit/s"
	case r%Mbit == 0:
		return strconv.FormatInt(int64(r/Mbit), 10) + " Mbit/s"
	case r%Kbit == 0:
		return strconv.FormatInt(int64(r/Kbit), 10) + " kbit/s"
	}
	return strconv.FormatInt(int64(r), 10) + " bit/s"
}

// DefaultMTU is the MTU of both TUN devices unless a Profile sets one.
const DefaultMTU = 1500

// MinQueueBytes is the smallest queue a Profile gets by default: a
// bandwidth-delay product of a few packets would starve TCP on short links.
const MinQueueBytes = 64 << 10

// ErrUnknownProfile is returned by ProfileByName.
var ErrUnknownProfile = errors.New("unknown link profile")

// Profile describes an emulated link. Every property applies to each
// direction on its own: a Loss of 0.001 loses about 0.1% of the packets
// from A to B and, independently, 0.1% of those from B to A.
type Profile struct {
	Name string
	// Rate is the bottleneck rate; 0 means no rate limit (packets are only
	// delayed and lost).
	Rate BitRate
	// RTT is the round-trip propagation delay: each direction delays every
	// packet by RTT/2 after serializing it at Rate.
	RTT time.Duration
	// Jitter spreads each packet's one-way delay uniformly over
	// RTT/2 ± Jitter (never below zero). Unless Reorder is set, a packet
	// never overtakes the one sent before it: it leaves no earlier than
	// its predecessor, as on a real path, so heavy jitter also raises the
	// mean delay.
	Jitter  time.Duration
	Reorder bool
	// Loss is the probability that a packet is lost on the wire, after it
	// has crossed the queue (a lost packet still used its share of Rate).
	Loss float64
	// QueueBytes bounds the bottleneck queue, drop-tail. 0 means one
	// bandwidth-delay product (Rate × RTT), at least MinQueueBytes; without
	// a Rate nothing queues.
	QueueBytes int
	// MTU of both TUN devices; 0 means DefaultMTU.
	MTU int
}

// Profiles returns the named profiles, slowest first:
//
//	dsl  20 Mbit/s, 40 ms RTT, 0.1% loss, queue 100 kB (one BDP)
//	wan  100 Mbit/s, 80 ms RTT, 0.5% loss, queue 1 MB (one BDP)
//	lan  1 Gbit/s, 1 ms RTT, no loss, queue 1 MiB
//
// On a LAN the bottleneck is the sender's own interface, whose transmit
// queue (1000 packets) never drops a TCP sender's packets: the kernel holds
// them back instead. The relay cannot hold a sender back, and a one-BDP
// queue (125 kB) would drop the 64 kB bursts that segmentation offload
// sends back to back, so lan gets a deep queue.
func Profiles() []Profile {
	return []Profile{
		{Name: "dsl", Rate: 20 * Mbit, RTT: 40 * time.Millisecond, Loss: 0.001},
		{Name: "wan", Rate: 100 * Mbit, RTT: 80 * time.Millisecond, Loss: 0.005},
		{Name: "lan", Rate: 1 * Gbit, RTT: 1 * time.Millisecond, QueueBytes: 1 << 20},
	}
}

// ProfileByName returns the named profile (see Profiles).
func ProfileByName(name string) (Profile, error) {
	var names []string
	for _, p := range Profiles() {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return Profile{}, fmt.Errorf("%w %q: choose one of %s, or describe a custom link with a Profile",
		ErrUnknownProfile, name, strings.Join(names, ", "))
}

// Validate reports the first property of p that cannot be emulated.
func (p Profile) Validate() error {
	mtu := p.mtu()
	switch {
	case p.Rate < 0:
		return fmt.Errorf("link profile %s: negative rate %d", p.Name, p.Rate)
	case p.RTT < 0 || p.Jitter < 0:
		return fmt.Errorf("link profile %s: negative delay (RTT %v, jitter %v)", p.Name, p.RTT, p.Jitter)
	case !(p.Loss >= 0 && p.Loss < 1):
		return fmt.Errorf("link profile %s: loss %v is not a probability in [0, 1)", p.Name, p.Loss)
	case mtu < 576 || mtu > 65535:
		return fmt.Errorf("link profile %s: MTU %d outside 576–65535", p.Name, mtu)
	case p.QueueBytes < 0 || (p.QueueBytes > 0 && p.QueueBytes < mtu):
		return fmt.Errorf("link profile %s: queue of %d bytes cannot hold one packet of the MTU (%d)", p.Name, p.QueueBytes, mtu)
	}
	return nil
}

// String describes p for reports: "dsl (20 Mbit/s, 40ms RTT, 0.1% loss)".
func (p Profile) String() string {
	parts := []string{p.Rate.String(), p.RTT.String() + " RTT"}
	if p.Jitter > 0 {
		parts = append(parts, "±"+p.Jitter.String()+" jitter")
	}
	if p.Loss > 0 {
		parts = append(parts, strconv.FormatFloat(p.Loss*100, 'g', 3, 64)+"% loss")
	}
	name := p.Name
	if name == "" {
		name = "custom"
	}
	return name + " (" + strings.Join(parts, ", ") + ")"
}

func (p Profile) mtu() int {
	if p.MTU == 0 {
		return DefaultMTU
	}
	return p.MTU
}

// queueBytes is the drop-tail limit in bytes; 0 means unbounded.
func (p Profile) queueBytes() int64 {
	switch {
	case p.QueueBytes > 0:
		return int64(p.QueueBytes)
	case p.Rate <= 0:
		return 0
	}
	bdp := int64(float64(p.Rate) * p.RTT.Seconds() / 8)
	return max(bdp, MinQueueBytes)
}
