package sync

import (
	"runtime"
	gosync "sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Compression levels a sender chooses from, fastest first. Measured on the
// new chunks of bench's Debian pair (148 MB of 16 KiB chunks, each
// compressed alone, one core of this machine): fastest 0.383 of the raw
// bytes at ≈220 MB/s, default 0.371 at ≈190 MB/s, better 0.368 at
// ≈135 MB/s, best 0.358 at ≈28 MB/s. On a LAN the fastest level keeps up
// with the link; on a 20 Mbit/s link even the best leaves the CPU idle
// most of the time, and sends 7% fewer bytes.
var levels = [...]zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression}

// levelCost is each level's compression time relative to the one below
// it, rounded up from the measurements above: raising the level is worth
// it when the extra time fits in the time the stream waits for the link.
var levelCost = [len(levels)]float64{1, 1.3, 1.5, 5}

// encoders holds one shared zstd encoder per level, made when a stream
// first asks for it: an encoder at the best level holds ≈35 MiB of tables
// per concurrent user, so a push has at most GOMAXPROCS of them (more
// would not compress faster) whatever its number of streams. (One state
// at the best level was tried: streams waiting for it count the wait as
// compression and step down, and bench's debian over dsl sent 63.2 MB
// instead of 56.1 MB.)
type encoders struct {
	mu  gosync.Mutex
	enc [len(levels)]*zstd.Encoder
}

// get returns the encoder of level l.
func (e *encoders) get(l int) (*zstd.Encoder, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.enc[l] == nil {
		z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(levels[l]),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithLowerEncoderMem(true),
			zstd.WithWindowSize(chunkWindow))
		if err != nil {
			return nil, err
		}
		e.enc[l] = z
	}
	return e.enc[l], nil
}

// chunkWindow bounds the zstd window of a chunk larger than it; a smaller
// chunk is one single-segment frame whose window is its content, so the
// receiver's decoder (its window bounded by the largest chunk the offer
// allows) takes every frame a sender writes.
const chunkWindow = 1 << 20

func (e *encoders) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, z := range e.enc {
		if z != nil {
			z.Close()
			e.enc[i] = nil
		}
	}
}

// levelCtl chooses a data stream's compression level from what the
// stream spends its time on: compressing (the CPU is the limit) or
// waiting for the link to take its bytes (the link is). It raises the
// level while the extra compression time the next level costs fits in
// the time spent waiting, and lowers it when the stream hardly waits at
// all. The link's rate and the CPU left are measured this way, whatever
// the loss, the other streams or the other processes do to them.
type levelCtl struct {
	// level is the current level, top the highest it may reach; fixed
	// keeps the level as it is (a small round's, chosen once).
	level, top int
	fixed      bool
	comp, wait time.Duration
	batches    int
	// out is the bytes the stream wrote since the last decision; a
	// decision waits for minOut of them. The stream's write buffer hides
	// the link's pace until it fills: batches that fit in it wait for
	// nothing however slow the link, and a decision taken on them alone
	// stepped down for no reason (bench's debian over dsl sent 18% of
	// its chunk bytes at the fastest level).
	out, minOut int
}

// ctlBatches is the fewest batches a decision looks at.
const ctlBatches = 2

// observe records a batch's compression and waiting times and the bytes
// it wrote, and reports the level for the next batch.
func (c *levelCtl) observe(comp, wait time.Duration, out int) int {
	c.comp += comp
	c.wait += wait
	c.out += out
	c.batches++
	if c.fixed {
		return c.level
	}
	if c.batches < ctlBatches || c.out < c.minOut {
		return c.level
	}
	switch {
	case c.level < c.top && float64(c.wait) > float64(c.comp)*(levelCost[c.level+1]-1)*1.25:
		c.level++
	case c.level > 0 && c.wait < c.comp/16:
		c.level--
	}
	c.comp, c.wait, c.batches, c.out = 0, 0, 0, 0
	return c.level
}

// levelRange is where a round's levels start and how high they may go.
// On a long path (round trip 10 ms or more) streams start at the best
// level and step down when they hardly wait for the link (started at the
// better level, they sent 12-14% of bench's debian chunks over dsl at it
// before they climbed, about 0.4% more bytes). On a short one they
// start at the fastest and go no higher than the default level: a LAN
// link outruns the CPU, and a stream that waits there waits for the
// receiver's CPU more likely, which compressing harder does not help
// (bench's debian over lan on this 2-core machine, sender and receiver
// sharing the cores: 7.0 s with every level allowed, 3.9 s at the fastest
// in a run of the same load). Under a rate cap
// a single core outruns at the best level, they start there.
func levelRange(rtt time.Duration, bytesPerSec int64) (first, top int) {
	best := len(levels) - 1
	switch {
	case capped(bytesPerSec):
		return best, best
	case rtt >= extraConnsRTT:
		return best, best
	}
	return 0, 1
}

// capped reports whether a rate cap of bytesPerSec (0: none) is slow
// enough that one core compresses faster at the best level.
func capped(bytesPerSec int64) bool { return bytesPerSec > 0 && bytesPerSec <= 8<<20 }
