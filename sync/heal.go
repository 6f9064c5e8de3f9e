package sync

import (
	"context"
	"errors"
	"fmt"
	gosync "sync"

	"golang.org/x/sync/errgroup"

	"github.com/ntc-project/ntc/chunk"
)

// Healing. A chunk the receiver's store holds may fail verification when
// the receiver reads it during a push: as the base of a patch, or to write
// the version's image files. The receiver then sets it aside (the store
// forgets it, so that later pushes send it again) and, when the version
// being pushed holds it, asks the sender for it within the same push. A
// chunk of the version the store lacks (set aside before) is asked for
// the same way, also when the offer does not list it:
//
//	R→S msgHeal   IDs of chunks of the version; both sides append those
//	              not among the offer's new chunks to that list, in order
//	R→S msgWant   a round as any other, over the longer list: the damaged
//	              chunks are wanted again
//	S→R msgSent … data streams, then the receiver stores the good copies
//
// A heal is bounded: at most maxHealChunks chunks per push, maxHealIDs per
// frame, and maxHeals heals per push. Senders speak it from protocol 4 on;
// a receiver heals only for them.
const (
	msgHeal = 18 // R→S: chunks of the version to send again: the stored copy is damaged

	healProtocol  = 4
	maxHealIDs    = 8192
	maxHealChunks = 1 << 16
	maxHeals      = 2
)

// ErrDamagedStore reports chunks of the receiver's store that failed
// verification and could not be healed within the push (too many, or a
// sender that cannot send them again). They are set aside: a later push
// that offers them sends them again.
var ErrDamagedStore = errors.New("chunks in the receiver's store are damaged (see its log); they are set aside, and a later push sends them again")

// ErrOldSender: the sender's protocol predates healing, so it cannot send
// chunks the receiver holds damaged again; it comes wrapped with
// ErrDamagedStore.
var ErrOldSender = errors.New("the sender's ntc cannot send stored chunks again")

func encodeHeal(ids []chunk.ID) []byte {
	var e enc
	e.uvarint(uint64(len(ids)))
	for _, id := range ids {
		e.id(id)
	}
	return e.b
}

func decodeHeal(p []byte) ([]chunk.ID, error) {
	d := dec{b: p}
	n := d.count(32)
	if n > maxHealIDs {
		d.fail("too many chunks to heal")
		n = 0
	}
	if n == 0 && d.err == nil {
		d.fail("no chunk to heal")
	}
	ids := make([]chunk.ID, 0, n)
	for range n {
		ids = append(ids, d.id())
	}
	return ids, d.done()
}

// forgetter is a store that can set a damaged chunk aside: Has reports it
// missing from then on, and Put stores a good copy again
// (chunk.PackStore.Forget).
type forgetter interface {
	Forget(id chunk.ID)
}

// damagedSet collects the stored chunks found damaged during a push.
type damagedSet struct {
	mu  gosync.Mutex
	ids map[chunk.ID]struct{}
}

// note records a read of a stored chunk that failed with err, if err says
// the chunk is damaged, and reports whether it did.
func (d *damagedSet) note(err error) bool {
	var ice *chunk.InvalidChunkError
	if !errors.As(err, &ice) {
		return false
	}
	d.add(ice.ID)
	return true
}

func (d *damagedSet) add(id chunk.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = map[chunk.ID]struct{}{}
	}
	d.ids[id] = struct{}{}
}

// take returns the chunks noted so far and forgets them.
func (d *damagedSet) take() []chunk.ID {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]chunk.ID, 0, len(d.ids))
	for id := range d.ids {
		out = append(out, id)
	}
	d.ids = nil
	return out
}

// healHeld heals, before the version is committed, the stored chunks
// found damaged so far (as patch bases) and the chunks of the version the
// store lacks although the offer does not list them (the base holds
// them): chunks set aside before, by a push that could not heal them or by
// 'ntc check'. Damaged chunks the version does not hold are only set
// aside.
func (p *push) healHeld(ctx context.Context) error {
	if p.version < healProtocol {
		// An older sender cannot send them again: the chunks asked for
		// whole instead of as patches are in, and the version is whole
		// unless its image files need the damaged chunks (materialize).
		p.in.damaged.take()
		return nil
	}
	listed := make(map[chunk.ID]bool, len(p.in.news))
	for _, nc := range p.in.news {
		listed[nc.entry.ID] = true
	}
	for _, x := range p.in.index {
		for _, e := range x.Entries {
			if e.Zero || listed[e.ID] {
				continue
			}
			listed[e.ID] = true
			ok, err := p.r.Repo.store.Has(ctx, e.ID)
			if err != nil {
				return err
			}
			if !ok {
				p.in.damaged.add(e.ID)
			}
		}
	}
	ids := p.in.damaged.take()
	if len(ids) == 0 {
		return nil
	}
	return p.heal(ctx, ids)
}

// materialize writes the committed version's image files; a stored chunk
// that fails verification meanwhile is healed and the files written again.
func (p *push) materialize(ctx context.Context, seq uint64) error {
	for heals := 0; ; heals++ {
		err := p.r.Repo.materialize(ctx, p.set, seq, p.in.stage)
		// A chunk missing from the store is one set aside before, by a
		// push that could not heal it.
		if err == nil || !p.in.damaged.note(err) && !errors.Is(err, chunk.ErrChunkMissing) || heals == maxHeals {
			return err
		}
		p.r.log().Warn("stored chunk damaged; checking the version's other stored chunks", "set", p.set, "err", err)
		if err := p.verifyHeld(ctx); err != nil {
			return err
		}
		ids := p.in.damaged.take()
		if len(ids) == 0 {
			return err
		}
		if err := p.heal(ctx, ids); err != nil {
			return err
		}
	}
}

// verifyHeld reads every chunk of the version that did not arrive in this
// push, noting those that fail verification or are missing.
func (p *push) verifyHeld(ctx context.Context) error {
	arrived := map[chunk.ID]bool{}
	for i, nc := range p.in.news {
		if i < len(p.heldAtStart) && !p.heldAtStart[i] {
			arrived[nc.entry.ID] = true
		}
	}
	seen := map[chunk.ID]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, x := range p.in.index {
		for _, e := range x.Entries {
			if e.Zero || arrived[e.ID] || seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			g.Go(func() error {
				_, err := p.r.Repo.store.Get(gctx, e.ID)
				if errors.Is(err, chunk.ErrChunkMissing) || errors.As(err, new(*chunk.InvalidChunkError)) {
					p.in.damaged.add(e.ID)
					return nil
				}
				return err
			})
		}
	}
	return g.Wait()
}

// heal sets the damaged stored chunks ids aside and, those the version
// holds, asks the sender for again and stores.
func (p *push) heal(ctx context.Context, ids []chunk.ID) error {
	st, ok := any(p.r.Repo.store).(forgetter)
	if !ok {
		return fmt.Errorf("%w: the store cannot set them aside", ErrDamagedStore)
	}
	for _, id := range ids {
		st.Forget(id)
	}
	p.r.log().Warn("stored chunks damaged or missing: set aside, asking the sender for those of the version", "set", p.set, "chunks", len(ids), "first", ids[0].Short())
	in := &p.in
	if p.version < healProtocol {
		return fmt.Errorf("%w: %w", ErrDamagedStore, ErrOldSender)
	}
	if p.healed += len(ids); p.healed > maxHealChunks {
		return fmt.Errorf("%w: over %d chunks", ErrDamagedStore, maxHealChunks)
	}
	// The chunks of the version among ids, in the version's order; those
	// not among the new chunks yet are added to them, as the sender does.
	listed := make(map[chunk.ID]bool, len(in.news))
	for _, nc := range in.news {
		listed[nc.entry.ID] = true
	}
	want := make(map[chunk.ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	var ask []chunk.ID
	for i, x := range in.index {
		for _, e := range x.Entries {
			if e.Zero || !want[e.ID] {
				continue
			}
			delete(want, e.ID)
			ask = append(ask, e.ID)
			if listed[e.ID] {
				continue
			}
			listed[e.ID] = true
			if err := in.acct.reserve(newChunkCost, "the chunks to heal"); err != nil {
				return err
			}
			in.news = append(in.news, newChunk{image: i, entry: e})
		}
	}
	for len(ask) > 0 {
		n := min(len(ask), maxHealIDs)
		if err := p.w.write(msgHeal, encodeHeal(ask[:n])); err != nil {
			return err
		}
		ask = ask[n:]
	}
	if err := p.fetch(ctx); err != nil {
		return err
	}
	return p.syncStore(ctx)
}

// healChunks takes the chunks a receiver asks for again (msgHeal): each
// must be a chunk of the version; those not among the push's new chunks
// yet are appended to them, in order, as the receiver does.
func (p *pushing) healChunks(b []byte) error {
	ids, err := decodeHeal(b)
	if err != nil {
		return err
	}
	if p.entryOf == nil {
		p.entryOf = map[chunk.ID]newChunk{}
		for i, im := range p.v.Images {
			for _, e := range im.Index.Entries {
				if _, ok := p.entryOf[e.ID]; !ok && !e.Zero {
					p.entryOf[e.ID] = newChunk{image: i, entry: e}
				}
			}
		}
		p.listed = make(map[chunk.ID]bool, len(p.news))
		for _, nc := range p.news {
			p.listed[nc.entry.ID] = true
		}
	}
	for _, id := range ids {
		nc, ok := p.entryOf[id]
		if !ok {
			return fmt.Errorf("%w: asked again for chunk %s, not one of the version's", ErrMalformed, id.Short())
		}
		if !p.listed[id] {
			p.listed[id] = true
			p.news = append(p.news, nc)
		}
	}
	p.res.Healed += len(ids)
	p.s.log().Warn("the receiver's copy of chunks is damaged: sending them again", "chunks", len(ids))
	return nil
}
