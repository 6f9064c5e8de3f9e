package sync

import (
	"context"
	"errors"
	"fmt"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// A hand-off ends with the sender asking the receiver to resume the version
// it just pushed: a control stream whose first frame is msgResume instead
// of msgHello. The receiver resumes only through Receiver.Resume, which
// decides whether this peer may ask (nil: nobody may), and only the set's
// current version, the one named: never anything the request describes.
const (
	msgResume  = 16 // S→R, first frame: resume this version of a set
	msgResumed = 17 // R→S: the copy runs
)

// Conditions a resume request can end with.
var (
	// ErrResumeRefused: the receiver does not resume for this peer.
	ErrResumeRefused = errors.New("the receiver does not resume versions for this node")
	// ErrNotCurrent: the version named is not the receiver's current one.
	ErrNotCurrent = errors.New("the version to resume is not the receiver's current version of the set")
)

// maxResumedDetail bounds the receiver's description of the copy it runs.
const maxResumedDetail = 4096

type resumeRequest struct {
	set    string
	digest repo.Digest
}

func (m resumeRequest) encode() []byte {
	var e enc
	e.str(m.set)
	e.id(chunk.ID(m.digest))
	return e.b
}

func decodeResumeRequest(p []byte) (resumeRequest, error) {
	d := dec{b: p}
	m := resumeRequest{set: d.str(repo.MaxName)}
	m.digest = repo.Digest(d.id())
	return m, d.done()
}

// Resumed describes the copy a receiver started.
type Resumed struct {
	Set     string
	Version uint64 // the version resumed, the receiver's number
	PID     int
	// Detail is the receiver's description for people (its QMP socket,
	// serial log), at most 4 KiB.
	Detail string
}

func (m Resumed) encode() []byte {
	var e enc
	e.uvarint(m.Version)
	e.uvarint(uint64(m.PID))
	e.str(m.Detail)
	return e.b
}

func decodeResumed(p []byte) (Resumed, error) {
	d := dec{b: p}
	m := Resumed{Version: d.uvarint()}
	pid := d.uvarint()
	if pid > 1<<31 {
		d.fail("pid")
	}
	m.PID = int(pid)
	m.Detail = d.str(maxResumedDetail)
	return m, d.done()
}

// Resumer starts the set's current version, its number version, as a
// running copy on the receiver, for peer. It returns ErrResumeRefused when
// peer may not ask.
type Resumer func(ctx context.Context, peer transport.ID, set string, version uint64) (Resumed, error)

// RequestResume asks the receiver at conn to resume version d of set, which
// must be its current version (a push just made it so), and returns once
// the copy runs there.
func (s *Sender) RequestResume(ctx context.Context, conn *transport.Conn, set string, d repo.Digest) (*Resumed, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	p, err := ask(ctx, conn, msgResume, resumeRequest{set: set, digest: d}.encode(), msgResumed, 0, "the receiver to resume "+set)
	if err != nil {
		return nil, err
	}
	r, err := decodeResumed(p)
	if err != nil {
		return nil, err
	}
	r.Set = set
	return &r, nil
}

// serveResume answers a resume request (its frame is next on rd).
func (r *Receiver) serveResume(ctx context.Context, cancel context.CancelFunc, conn *transport.Conn, rd *frameReader, w *frameWriter) error {
	p, err := rd.expect(msgResume)
	if err != nil {
		return err
	}
	req, err := decodeResumeRequest(p)
	if err != nil {
		return err
	}
	if err := CheckName(req.set); err != nil {
		return err
	}
	if r.Resume == nil {
		return ErrResumeRefused
	}
	// No push changes the set while its copy starts.
	unlock, err := r.Repo.lock(ctx, req.set, conn.PeerID().String(), func() {
		cancel()
		conn.CloseWithError(transport.ErrShuttingDown)
	})
	if err != nil {
		return err
	}
	defer unlock()
	head, err := r.Repo.nodes.Head(ctx, req.set)
	if err != nil {
		return err
	}
	if head == nil || head.Digest != req.digest {
		return ErrNotCurrent
	}
	if r.Repo.materializedVersion(req.set) != head.Seq {
		if err := r.Repo.Materialize(ctx, req.set, head.Seq); err != nil {
			return err
		}
	}
	res, err := r.Resume(ctx, conn.PeerID(), req.set, head.Seq)
	if err != nil {
		return fmt.Errorf("resume %s v%d for %s: %w", req.set, head.Seq, conn.PeerID(), err)
	}
	res.Version = head.Seq
	if len(res.Detail) > maxResumedDetail {
		res.Detail = res.Detail[:maxResumedDetail]
	}
	r.log().Info("resumed", "set", req.set, "version", head.Seq, "peer", conn.PeerID(), "pid", res.PID)
	if err := w.write(msgResumed, res.encode()); err != nil {
		return err
	}
	return w.flush()
}
