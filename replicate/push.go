package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// Push pushes checkpoints of set Set of the node repository Dir to one
// receiver, each over a new connection. What the receiver acknowledged is
// recorded in Dir too (sync.Sender.StateDir).
type Push struct {
	Dir string
	Set string
	// Self is this node's ID, Peer the receiver's; Dial connects to it.
	Self, Peer transport.ID
	Dial       func(ctx context.Context) (*transport.Conn, error)
	// Streams, Conns and BytesPerSec are sync.Sender's.
	Streams, Conns int
	BytesPerSec    int64
	// Logger, if set, gets what the sender does (sync.Sender.Logger).
	Logger *slog.Logger
}

var _ Pusher = (*Push)(nil)

func (p *Push) sender() *ntcsync.Sender {
	// A new Sender per push: it caches the indexes it reads, which would
	// otherwise grow with every version.
	return &ntcsync.Sender{StateDir: p.Dir, Node: p.Self.String(), Streams: p.Streams, Conns: p.Conns, BytesPerSec: p.BytesPerSec, Dial: p.Dial, Logger: p.Logger}
}

// Acked returns the checkpoint the receiver last committed from this
// sender (0 if unknown).
func (p *Push) Acked(ctx context.Context) (int, error) {
	return AckedCheckpoint(p.Dir, p.Set, p.sender().AckedDigest(p.Peer, p.Set))
}

// Push sends checkpoint seq. Failures of the link or of the receiver are
// transient; a receiver that refuses this node, is another node than Peer,
// speaks another protocol version, or a checkpoint that cannot be read or
// keeps arriving damaged are Permanent.
func (p *Push) Push(ctx context.Context, seq int) (Pushed, error) {
	s := p.sender()
	_, prev := s.LastAcked(p.Peer, p.Set)
	v, err := OpenVersion(ctx, p.Dir, p.Set, seq, prev)
	if err != nil {
		return Pushed{}, Permanent(err)
	}
	defer v.Close()
	conn, err := p.Dial(ctx)
	if err != nil {
		return Pushed{}, p.classify(fmt.Errorf("connect: %w", err))
	}
	defer conn.Close()
	res, err := s.Push(ctx, conn, v.Sync)
	if err != nil {
		return Pushed{}, p.classify(err)
	}
	return Pushed{Version: res.Version, BytesSent: res.BytesUp + res.BytesDown, ChunksSent: res.ChunksSent, Patched: res.Patched, Delta: !res.Base.IsZero()}, nil
}

func (p *Push) classify(err error) error {
	if _, ok := errors.AsType[*transport.PeerMismatchError](err); ok {
		return Permanent(err)
	}
	switch {
	case errors.Is(err, transport.ErrPeerNotAllowed):
		return Permanent(fmt.Errorf("%w: the receiver must allow this node, %s", err, p.Self))
	case errors.Is(err, transport.ErrVersionMismatch), // sync's too
		errors.Is(err, ntcsync.ErrBadName), errors.Is(err, ntcsync.ErrBadChunks):
		return Permanent(err)
	case errors.Is(err, repo.ErrDiverged):
		// Pushing again changes nothing until someone chooses.
		return Permanent(fmt.Errorf("%w (the receiver's copy of %s ran on apart from this one: stop it there, or force a push of this one)", err, p.Set))
	}
	return err
}
