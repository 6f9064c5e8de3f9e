package sync

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ntc-project/ntc/transport"
)

// extraConnsFrom is how many bytes of new chunks make extra data
// connections worth their handshakes: below it, fresh connections' initial
// windows only overflow a slow link's queue together.
const extraConnsFrom = 8 << 20

// extraConnsRTT is the round trip from which extra data connections are
// used at all: on a short path one connection's window opens fast, and more
// connections only compete for the CPU (and on a loaded loopback, have
// packets declared lost and sent again).
const extraConnsRTT = 10 * time.Millisecond

// connPerRTT is the round trip each data connection of a push stands for:
// a push over a path of round trip r uses up to r/connPerRTT connections
// (at most Conns). Under random loss a connection's congestion window
// carries about a segment per round trip divided by the square root of
// the loss rate, so a longer path needs proportionally more connections
// for the same rate (bench/README.md has the measurements over bench's
// wan and dsl links).
const connPerRTT = 10 * time.Millisecond

// dataConns is how many connections carry a push's data over conn.
func (s *Sender) dataConns(conn *transport.Conn) int {
	if s.connsAnyRTT {
		return max(s.Conns, 1)
	}
	return connsFor(conn.QUIC().ConnectionStats().MinRTT, s.Conns)
}

// connsFor is the number of data connections for a round trip of rtt,
// at most limit.
func connsFor(rtt time.Duration, limit int) int {
	return max(min(limit, int(rtt/connPerRTT)), 1)
}

// wantsExtra reports whether n bytes of new chunks over conn call for the
// extra data connections.
func (s *Sender) wantsExtra(conn *transport.Conn, n int64) bool {
	if s.Conns <= 1 || s.Dial == nil || n < s.extraFrom() {
		return false
	}
	return s.connsAnyRTT || conn.QUIC().ConnectionStats().MinRTT >= extraConnsRTT && s.dataConns(conn) > 1
}

func (s *Sender) extraFrom() int64 {
	if s.connsFrom > 0 {
		return s.connsFrom
	}
	return extraConnsFrom
}

// newBytes is the size of the new chunks.
func newBytes(news []newChunk) int64 {
	var n int64
	for _, nc := range news {
		n += nc.entry.Length
	}
	return n
}

// growFrom is how many bytes a round must still have to send for extra
// data connections, dialled during the round, to be worth their
// handshakes.
const growFrom = 256 << 10

// mayGrow reports whether a round over conn may dial extra data
// connections once the control connection shows random loss: the path
// is long enough for several connections, and none was dialled yet.
func (s *Sender) mayGrow(conn *transport.Conn, d *dialing) bool {
	if s.Conns <= 1 || s.Dial == nil || d == nil || d.wasStarted() {
		return false
	}
	return s.connsAnyRTT || conn.QUIC().ConnectionStats().MinRTT >= extraConnsRTT && s.dataConns(conn) > 1
}

// randomLoss reports whether st, the control connection's statistics,
// show a few packets newly lost (more than lost0, those lost at the last
// look, and at most randomLossMax more) while the path's queue is short:
// the latest round trip is within a quarter of the shortest. Such a loss
// is the link's, not a full queue's: it cuts the window of a connection
// that had not filled the link, and more connections carry more. A loss
// with a long queue, or a burst of them, is congestion (on bench's dsl a
// fresh connection's slow start loses tens of packets to the queue at
// once), and fresh connections' initial windows would only overflow the
// queue again.
func randomLoss(st quic.ConnectionStats, lost0 uint64) bool {
	n := st.PacketsLost - lost0
	return st.PacketsLost > lost0 && n <= randomLossMax && st.LatestRTT > 0 && st.LatestRTT <= st.MinRTT+st.MinRTT/4
}

// randomLossMax is the most packets lost between two looks that can be
// the link's random loss.
const randomLossMax = 3

// dialing is the opening of a push's extra data connections: they join
// the rounds as they open, and data starts on the control connection
// without waiting for them.
type dialing struct {
	dial func(ctx context.Context) (*transport.Conn, error)
	log  func(err error)

	mu      sync.Mutex
	started bool
	opening int               // dials under way
	open    []*transport.Conn // opened
	claimed int               // how many of open this round's streams took
	changed chan struct{}     // closed (and replaced) when open or opening changes
	wg      sync.WaitGroup
}

// newDialing returns the extra data connections of a push, none opened
// yet; nil when s dials none.
func (s *Sender) newDialing() *dialing {
	if s.Conns <= 1 || s.Dial == nil {
		return nil
	}
	return &dialing{dial: s.Dial, changed: make(chan struct{}), log: func(err error) {
		s.log().Warn("extra data connection", "err", err)
	}}
}

// startDial starts opening the extra data connections of a push over
// conn (dataConns-1 of them), once per push.
func (s *Sender) startDial(ctx context.Context, conn *transport.Conn, d *dialing) {
	d.start(ctx, s.dataConns(conn)-1)
}

// start starts n dials, unless d was started already. A dial that fails
// only leaves the push with fewer connections.
func (d *dialing) start(ctx context.Context, n int) {
	if d == nil || n <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return
	}
	d.started = true
	d.opening = n
	d.wg.Add(n)
	for range n {
		go func() {
			defer d.wg.Done()
			c, err := d.dial(ctx)
			if err != nil && ctx.Err() == nil {
				d.log(fmt.Errorf("open data connection: %w", err))
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			d.opening--
			if err == nil {
				d.open = append(d.open, c)
			}
			close(d.changed)
			d.changed = make(chan struct{})
		}()
	}
}

func (d *dialing) wasStarted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started
}

// conns returns the connections opened so far (none for a nil d).
func (d *dialing) conns() []*transport.Conn {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.open)
}

// newRound lets a round's streams claim the connections again, and
// returns how many there are or will be (opened or opening).
func (d *dialing) newRound() int {
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.claimed = 0
	return len(d.open) + d.opening
}

// claim returns an opened connection no stream of this round took yet;
// else nil and a channel closed when that may change, and whether any
// dial is under way (or may start, when grow).
func (d *dialing) claim(grow bool) (*transport.Conn, <-chan struct{}, bool) {
	if d == nil {
		return nil, nil, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.claimed < len(d.open) {
		d.claimed++
		return d.open[d.claimed-1], nil, false
	}
	return nil, d.changed, d.opening > 0 || grow && !d.started
}

// wait returns once the dials under way end.
func (d *dialing) wait() {
	if d != nil {
		d.wg.Wait()
	}
}

// close closes the connections, once their dials end.
func (d *dialing) close() {
	if d == nil {
		return
	}
	d.wg.Wait()
	for _, c := range d.open {
		c.Close()
	}
}
