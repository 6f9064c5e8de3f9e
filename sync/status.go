package sync

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/transport"
)

// A status request asks a receiver what it holds: a control stream whose
// first frame is msgStatus instead of msgHello, answered by one msgSets
// frame (or an error). Only peers the receiver accepts connections from
// (those that may push) reach it, and it tells them what a push would
// learn: the sets, their current versions, who sent them.
const (
	msgStatus = 19 // S→R, first frame: which sets (none: all)
	msgSets   = 20 // R→S: the receiver's sets
)

// Bounds of a status exchange: the sets asked for, the sets answered.
const (
	maxStatusAsk  = 64
	maxStatusSets = 4096
	// maxSetsFrame bounds the answer's frame: maxStatusSets sets of at
	// most maxName+maxNode+70 bytes each.
	maxSetsFrame = maxStatusSets * (maxName + maxNode + 80)
)

// SetStatus is what a receiver holds of one set.
type SetStatus struct {
	Set string `json:"set"`
	// Version is the receiver's number of its current version, the
	// newest complete one; Digest its identity; Created its instant (for
	// a checkpoint, the instant the guest was captured).
	Version uint64      `json:"version"`
	Digest  repo.Digest `json:"digest"`
	Created time.Time   `json:"created"`
	// Sender is the node that pushed it.
	Sender string `json:"sender,omitempty"`
	// Versions counts the versions kept, Diverged those that ran apart
	// from the current one.
	Versions uint64 `json:"versions"`
	Diverged uint64 `json:"diverged,omitempty"`
}

// PeerStatus is a receiver's answer to a status request.
type PeerStatus struct {
	// Now is the receiver's clock as it answered: ages are measured
	// against it, not against the asking node's clock.
	Now  time.Time   `json:"now"`
	Sets []SetStatus `json:"sets"`
}

type statusRequest struct {
	sets []string
}

func (m statusRequest) encode() []byte {
	var e enc
	e.uvarint(uint64(len(m.sets)))
	for _, s := range m.sets {
		e.str(s)
	}
	return e.b
}

func decodeStatusRequest(p []byte) (statusRequest, error) {
	d := dec{b: p}
	n := d.count(1)
	if n > maxStatusAsk {
		d.fail("too many sets asked for")
		n = 0
	}
	var m statusRequest
	for range n {
		m.sets = append(m.sets, d.str(maxName))
	}
	return m, d.done()
}

func (m PeerStatus) encode() []byte {
	var e enc
	e.u64(uint64(m.Now.UnixNano()))
	e.uvarint(uint64(len(m.Sets)))
	for _, s := range m.Sets {
		e.str(s.Set)
		e.uvarint(s.Version)
		e.id(chunk.ID(s.Digest))
		e.u64(uint64(s.Created.UnixNano()))
		e.str(s.Sender)
		e.uvarint(s.Versions)
		e.uvarint(s.Diverged)
	}
	return e.b
}

func decodePeerStatus(p []byte) (PeerStatus, error) {
	d := dec{b: p}
	m := PeerStatus{Now: time.Unix(0, int64(d.u64()))}
	n := d.count(1 + 1 + 32 + 8 + 1 + 1 + 1)
	if n > maxStatusSets {
		d.fail("too many sets")
		n = 0
	}
	for range n {
		s := SetStatus{Set: d.str(maxName), Version: d.uvarint(), Digest: repo.Digest(d.id())}
		s.Created = time.Unix(0, int64(d.u64()))
		s.Sender = d.str(maxNode)
		s.Versions, s.Diverged = d.uvarint(), d.uvarint()
		if d.err == nil && CheckName(s.Set) != nil {
			d.fail("bad set name")
		}
		m.Sets = append(m.Sets, s)
	}
	return m, d.done()
}

// RequestStatus asks the receiver at conn what it holds of sets (none:
// every set).
func RequestStatus(ctx context.Context, conn *transport.Conn, sets ...string) (*PeerStatus, error) {
	if len(sets) > maxStatusAsk {
		return nil, fmt.Errorf("%w: status of %d sets asked, limit %d", ErrLimit, len(sets), maxStatusAsk)
	}
	for _, s := range sets {
		if err := CheckName(s); err != nil {
			return nil, err
		}
	}
	p, err := ask(ctx, conn, msgStatus, statusRequest{sets: sets}.encode(), msgSets, maxSetsFrame, "the receiver's status")
	if err != nil {
		return nil, err
	}
	st, err := decodePeerStatus(p)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// serveStatus answers a status request (its frame is next on rd).
func (r *Receiver) serveStatus(rd *frameReader, w *frameWriter) error {
	rd.limit = maxStatusAsk * (maxName + binary.MaxVarintLen64 + 1)
	p, err := rd.expect(msgStatus)
	if err != nil {
		return err
	}
	req, err := decodeStatusRequest(p)
	if err != nil {
		return err
	}
	for _, s := range req.sets {
		if err := CheckName(s); err != nil {
			return err
		}
	}
	st, err := r.Repo.Status(req.sets...)
	if err != nil {
		return err
	}
	if len(st.Sets) > maxStatusSets {
		st.Sets = st.Sets[:maxStatusSets]
	}
	if err := w.write(msgSets, st.encode()); err != nil {
		return err
	}
	return w.flush()
}

// Status says what the repository holds of sets (none: every set with a
// current version).
func (r *Repo) Status(sets ...string) (*PeerStatus, error) {
	list, err := r.List()
	if err != nil {
		return nil, err
	}
	st := &PeerStatus{Now: time.Now(), Sets: []SetStatus{}}
	for _, si := range list {
		if si.Current == nil || len(sets) > 0 && !slices.Contains(sets, si.Set) {
			continue
		}
		c := si.Current
		sender := c.Sender
		if len(sender) > maxNode {
			sender = sender[:maxNode]
		}
		st.Sets = append(st.Sets, SetStatus{Set: si.Set, Version: c.Version, Digest: c.Digest, Created: c.Created,
			Sender: sender, Versions: uint64(len(si.Versions)), Diverged: uint64(len(si.Diverged))})
	}
	return st, nil
}
