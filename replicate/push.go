package replicate

import (
	"context"
	"errors"
	"fmt"

	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// Push pushes checkpoints of set Set to one receiver, Peer, each over a new
// connection.
type Push struct {
	Set  string
	Peer transport.ID
	// Sender pushes: its StateDir is the node repository the checkpoints
	// are taken into (what Peer acknowledged is recorded there too), its
	// Node this node's ID, its Dial connects to Peer; its tuning and
	// Logger apply to every push.
	Sender *ntcsync.Sender
}

var _ Pusher = (*Push)(nil)

// Acked returns the checkpoint the receiver last committed from this
// sender (0 if unknown).
func (p *Push) Acked(ctx context.Context) (int, error) {
	return AckedCheckpoint(p.Sender.StateDir, p.Set, p.Sender.AckedDigest(p.Peer, p.Set))
}

// Push sends checkpoint seq. Failures of the link or of the receiver are
// transient; a receiver that refuses this node, is another node than Peer,
// speaks another protocol version, or a checkpoint that cannot be read or
// keeps arriving damaged are Permanent.
func (p *Push) Push(ctx context.Context, seq int) (Pushed, error) {
	res, _, err := PushCheckpoint(ctx, p.Sender, p.Peer, p.Set, seq, p.Sender.Dial)
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
// node repository s.StateDir with s to peer, over the
// connection dial opens once the checkpoint is open, and closes it. The
// disks whose writes since peer's copy are known send their new chunks as
// patches (s.Logger is told which, debug). It returns what sync says of the
// push and the checkpoint pushed.
func PushCheckpoint(ctx context.Context, s *ntcsync.Sender, peer transport.ID, set string, seq int,
	dial func(context.Context) (*transport.Conn, error)) (*ntcsync.Result, int, error) {
	dir := s.StateDir
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
		return Permanent(fmt.Errorf("%w: the receiver must allow this node, %s", err, p.Sender.Node))
	case errors.Is(err, transport.ErrVersionMismatch), // sync's too
		errors.Is(err, ntcsync.ErrBadName), errors.Is(err, ntcsync.ErrBadChunks):
		return Permanent(err)
	case errors.Is(err, repo.ErrDiverged):
		// Pushing again changes nothing until someone chooses.
		return Permanent(err)
	}
	return err
}
