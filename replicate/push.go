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
	res, _, err := PushCheckpoint(ctx, p.sender(), p.Peer, p.Dir, p.Set, seq, p.Dial)
	var open *openError
	switch {
	case errors.As(err, &open):
		return Pushed{}, Permanent(open.err)
	case err != nil:
		return Pushed{}, p.classify(err)
	}
	return Pushed{Version: res.Version, BytesSent: res.BytesUp + res.BytesDown, ChunksSent: res.ChunksSent, Patched: res.Patched, Delta: !res.Base.IsZero()}, nil
}

// PushCheckpoint pushes checkpoint seq (0: the current one) of set in the
// node repository dir with s (whose StateDir is dir) to peer, over the
// connection dial opens once the checkpoint is open, and closes it. The
// disks whose writes since peer's copy are known send their new chunks as
// patches (s.Logger is told which, debug). It returns what sync says of the
// push and the checkpoint pushed.
func PushCheckpoint(ctx context.Context, s *ntcsync.Sender, peer transport.ID, dir, set string, seq int,
	dial func(context.Context) (*transport.Conn, error)) (*ntcsync.Result, int, error) {
	// Before anything reads dir as the sender's repository (which would
	// create one there).
	if _, err := repo.OpenExisting(dir); err != nil {
		return nil, 0, &openError{err} // repo.ErrNotRepo
	}
	_, prev := s.LastAcked(peer, set)
	v, err := OpenVersion(ctx, dir, set, seq, prev)
	if err != nil {
		return nil, 0, &openError{err}
	}
	defer v.Close()
	if len(v.Patched) > 0 && s.Logger != nil {
		s.Logger.Debug("the writes since the receiver's checkpoint are known: changed chunks may travel as patches", "disks", v.Patched)
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, v.Seq, err // the dialler says where it tried
	}
	defer conn.Close()
	res, err := s.Push(ctx, conn, v.Sync)
	return res, v.Seq, err
}

// openError is a checkpoint that could not be opened to push: it does not
// get better by trying again.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

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
		return Permanent(err)
	}
	return err
}
