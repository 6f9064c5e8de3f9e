package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The two ends of every link. Each pair lives in its own namespaces, so all
// links share the addresses.
var (
	subnet = netip.MustParsePrefix("10.254.0.0/30")
	addrA  = netip.MustParseAddr("10.254.0.1")
	addrB  = netip.MustParseAddr("10.254.0.2")
)

// teardownTimeout bounds the ip commands Close runs: it must finish even when
// called because the caller's context is done.
const teardownTimeout = 10 * time.Second

var links atomic.Uint64 // numbers this process's links

// Endpoint is one end of a Link: a network namespace whose only interfaces
// are lo and the TUN device Dev, with the address Addr.
type Endpoint struct {
	Namespace string // as `ip netns` names it
	Dev       string
	Addr      netip.Addr
}

// Wrap is the argv prefix that runs a command inside e's namespace:
// ip netns exec NS.
func (e Endpoint) Wrap() []string { return []string{"ip", "netns", "exec", e.Namespace} }

// Command returns a command that runs name inside e's namespace, where the
// other end of the link is reachable at its Addr. The process is the program
// itself (ip execs it), so killing the Cmd kills it.
func (e Endpoint) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append(e.Wrap()[1:], name)
	return exec.CommandContext(ctx, "ip", append(argv, args...)...)
}

// Link is an emulated network path between two endpoints, A and B.
type Link struct {
	profile Profile
	a, b    Endpoint

	lock       *os.File   // held while the link lives (see netns.go)
	created    []string   // namespaces to delete
	files      []*os.File // TUN devices, A's then B's
	dropped    []*os.File // their tx_dropped counters in sysfs
	lastUnread [2]atomic.Int64
	timers     []*wakeTimer
	dirs       [2]*direction // A→B, B→A
	wg         sync.WaitGroup
	closing    atomic.Bool

	mu   sync.Mutex
	stop func() bool // unregisters the context's AfterFunc
	once sync.Once
	err  error
	done chan struct{}
}

// Available reports why links cannot be created here, or nil: Up needs
// Linux, root, /dev/net/tun and iproute2's ip with netns support.
func Available() error { return available() }

var available = sync.OnceValue(func() error {
	if runtime.GOOS != "linux" {
		return errors.New("bench/link needs Linux (network namespaces and TUN devices)")
	}
	if os.Geteuid() != 0 {
		return errors.New("bench/link needs root to create network namespaces and TUN devices: run as root (CI does)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("bench/link needs the TUN driver: %w (modprobe tun)", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("bench/link needs iproute2's ip: %w (apt-get install iproute2)", err)
	}
	if _, err := ip(context.Background(), "netns", "list"); err != nil {
		return fmt.Errorf("bench/link needs `ip netns`: %w", err)
	}
	return nil
})

// Up creates a link shaped by p: two fresh network namespaces, each with a
// TUN device whose other side is a relay in this process. It first deletes
// what links of processes that died left behind. The link lives until Close
// or until ctx is done, whichever comes first; Done tells when it is gone.
//
// Nothing else is touched: no route, address or device is added to the
// namespace this process runs in, so no packet on the link can leave the
// machine.
func Up(ctx context.Context, p Profile) (*Link, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := Available(); err != nil {
		return nil, err
	}
	cleanStale(ctx)
	base := namePrefix + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(links.Add(1)-1, 10)
	l := &Link{
		profile: p,
		a:       Endpoint{Namespace: base + "-a", Addr: addrA},
		b:       Endpoint{Namespace: base + "-b", Addr: addrB},
		done:    make(chan struct{}),
	}
	if err := l.setup(ctx, base); err != nil {
		return nil, errors.Join(fmt.Errorf("bring up link %s: %w", base, err), l.Close())
	}
	l.mu.Lock()
	l.stop = context.AfterFunc(ctx, func() { l.Close() })
	l.mu.Unlock()
	return l, nil
}

func (l *Link) setup(ctx context.Context, base string) error {
	var err error
	if l.lock, err = lockLink(base); err != nil {
		return err
	}
	// The devices are down and have no address while they are in this
	// process's namespace.
	for _, ep := range []*Endpoint{&l.a, &l.b} {
		f, dev, err := openTUN("ntcl%d")
		if err != nil {
			return err
		}
		l.files = append(l.files, f)
		ep.Dev = dev
		// The open file keeps reading this device's counter after the move.
		dropped, err := os.Open("/sys/class/net/" + dev + "/statistics/tx_dropped")
		if err != nil {
			return err
		}
		l.dropped = append(l.dropped, dropped)
	}
	l.created = []string{l.a.Namespace, l.b.Namespace}
	if err := ipBatch(ctx, "",
		[]string{"netns", "add", l.a.Namespace},
		[]string{"netns", "add", l.b.Namespace},
		[]string{"link", "set", l.a.Dev, "netns", l.a.Namespace},
		[]string{"link", "set", l.b.Dev, "netns", l.b.Namespace},
	); err != nil {
		return err
	}
	mtu := strconv.Itoa(l.profile.mtu())
	for _, ep := range []Endpoint{l.a, l.b} {
		// addrgenmode none keeps IPv6 from sending solicitations across the
		// link. The device queue (the TUN ring the relay reads) gets the
		// usual Ethernet length, to ride out moments when the relay is not
		// scheduled.
		if err := ipBatch(ctx, ep.Namespace,
			[]string{"link", "set", ep.Dev, "mtu", mtu, "txqueuelen", "1000", "addrgenmode", "none"},
			[]string{"addr", "add", netip.PrefixFrom(ep.Addr, subnet.Bits()).String(), "dev", ep.Dev},
			[]string{"link", "set", ep.Dev, "up"},
			[]string{"link", "set", "lo", "up"},
		); err != nil {
			return err
		}
	}
	start := time.Now()
	seed := uint64(start.UnixNano())
	for i := range l.dirs {
		t, err := newWakeTimer()
		if err != nil {
			return err
		}
		l.timers = append(l.timers, t)
		in, out := l.files[i], l.files[1-i]
		rin, err := in.SyscallConn()
		if err != nil {
			return err
		}
		rout, err := out.SyscallConn()
		if err != nil {
			return err
		}
		l.dirs[i] = &direction{
			in:      rin,
			out:     rout,
			timer:   t,
			sh:      newShaper(l.profile, rand.New(rand.NewPCG(seed, uint64(i)))),
			mtu:     l.profile.mtu(),
			start:   start,
			closing: &l.closing,
			ab:      i == 0,
			armed:   disarmed,
		}
	}
	for _, d := range l.dirs {
		l.wg.Add(2)
		go func() { defer l.wg.Done(); d.readLoop() }()
		go func() { defer l.wg.Done(); d.writeLoop() }()
	}
	return nil
}

// A is the first endpoint.
func (l *Link) A() Endpoint { return l.a }

// B is the second endpoint.
func (l *Link) B() Endpoint { return l.b }

// Profile is the profile the link was brought up with.
func (l *Link) Profile() Profile { return l.profile }

// Stats returns the relay's counters so far.
func (l *Link) Stats() Stats {
	var s Stats
	for i, c := range []*Counters{&s.AB, &s.BA} {
		if d := l.dirs[i]; d != nil {
			*c = d.counters()
		}
		if i < len(l.dropped) {
			c.Unread = l.unread(i)
		}
	}
	return s
}

// unread reads the tx_dropped counter of device i, or the last value read
// if the device is gone.
func (l *Link) unread(i int) int64 {
	var b [24]byte
	n, err := l.dropped[i].ReadAt(b[:], 0)
	if err != nil && err != io.EOF {
		return l.lastUnread[i].Load()
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b[:n])), 10, 64)
	if err != nil {
		return l.lastUnread[i].Load()
	}
	return v
}

// Done is closed once the link has been torn down, by Close or because the
// context given to Up is done.
func (l *Link) Done() <-chan struct{} { return l.done }

// Close stops the relay, kills what still runs in the two namespaces and
// deletes them. It may be called any number of times from any goroutine, a
// signal handler's included; every call waits for the teardown and returns
// its error, which also reports a relay that stopped early.
func (l *Link) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		stop := l.stop
		l.mu.Unlock()
		if stop != nil {
			stop()
		}
		l.err = l.teardown()
		close(l.done)
	})
	return l.err
}

func (l *Link) teardown() error {
	l.closing.Store(true)
	for _, t := range l.timers {
		t.Close()
	}
	for _, f := range l.files {
		f.Close() // deletes the device
	}
	for i, f := range l.dropped {
		l.lastUnread[i].Store(l.unread(i))
		f.Close()
	}
	l.wg.Wait()
	var errs []error
	for _, d := range l.dirs {
		if d != nil && d.err != nil {
			errs = append(errs, fmt.Errorf("relay: %w", d.err))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	if err := deleteNetns(ctx, l.created...); err != nil {
		errs = append(errs, err)
	}
	if l.lock != nil {
		os.Remove(l.lock.Name())
		l.lock.Close()
	}
	return errors.Join(errs...)
}
