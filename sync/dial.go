package sync

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

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

// dialing is the opening of a push's extra data connections.
type dialing struct {
	done  chan struct{}
	conns []*transport.Conn
	err   error
}

// startDial starts opening the extra data connections of a push over
// conn (dataConns-1 of them). It returns nil when there are none to open.
func (s *Sender) startDial(ctx context.Context, conn *transport.Conn) *dialing {
	n := s.dataConns(conn) - 1
	if n <= 0 || s.Dial == nil {
		return nil
	}
	d := &dialing{done: make(chan struct{})}
	go func() {
		defer close(d.done)
		out := make([]*transport.Conn, n)
		g, gctx := errgroup.WithContext(ctx)
		for i := range n {
			g.Go(func() error {
				c, err := s.Dial(gctx)
				if err != nil {
					return fmt.Errorf("open data connection: %w", err)
				}
				out[i] = c
				return nil
			})
		}
		d.err = g.Wait()
		for _, c := range out {
			if c != nil {
				d.conns = append(d.conns, c)
			}
		}
	}()
	return d
}

// wait returns the opened connections (none for a nil d).
func (d *dialing) wait() ([]*transport.Conn, error) {
	if d == nil {
		return nil, nil
	}
	<-d.done
	return d.conns, d.err
}

// close closes the connections, once they are open.
func (d *dialing) close() {
	if d == nil {
		return
	}
	<-d.done
	for _, c := range d.conns {
		c.Close()
	}
}
