package chunk

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
)

// CompactStats says what a Compact did.
type CompactStats struct {
	ChunksDropped  int   // chunks keep refused, no longer readable
	PacksRemoved   int   // packs deleted (all dead, or rewritten)
	PacksRewritten int   // of those, packs whose live records were copied first
	BytesCopied    int64 // record bytes copied into the current pack
	BytesFreed     int64 // pack file bytes given back (removed minus copied)
}

// sealMinSize is the size from which Compact seals a mostly dead pack
// being appended to, to rewrite it (smaller ones wait to grow).
const sealMinSize = 64 << 20

// copyBufSize bounds the run of adjacent live records Compact reads at once
// (a record larger than this is read alone).
const copyBufSize = 4 << 20

// Compact drops every chunk for which keep returns false and gives their
// space back. A record is live if keep wants its chunk and the map points
// to it (of several copies of a chunk only the mapped one is live); the
// rest of a pack is dead. The pack being appended to is first sealed (a
// new one started) if it holds 64 MiB or more and is at least minDead
// dead. Packs other than the one being appended to are then, all-dead ones
// first, each group oldest first:
//
//   - removed when nothing in them is live;
//   - rewritten when their dead bytes are at least minDead of their size
//     (0.5: half dead): their live records are copied as they are into the
//     current pack, made durable, the map pointed at the copies, and the
//     pack removed.
//
// Dropped chunks read as missing as soon as Compact has looked at the map,
// before any pack is touched. A crash at any point loses no live chunk: a
// pack is removed only once its copies are durable, and a copy left beside
// its original is found by the next open (a copy replaces its original only
// if its content verifies) and the original becomes dead. Damage never
// turns into loss: a pack whose records stopped before its end when the
// store was opened (a torn tail, a damaged header) is left alone, and so is
// a pack in which a live record's header no longer matches the map.
// Dropped chunks whose packs stay are left out of those packs' sidecars
// when the store is closed; after a crash they come back until a Compact
// that refuses them again removes their pack.
//
// keep is called for every chunk with the store's lock held: it must be
// quick and must not call the store. Chunks Put while Compact runs must be
// kept. Get, Has and Put may run meanwhile; ctx is checked between packs,
// and a cancelled Compact leaves a valid store with the work done so far.
func (s *PackStore) Compact(ctx context.Context, keep func(ID) bool, minDead float64) (CompactStats, error) {
	s.gc.Lock()
	defer s.gc.Unlock()
	var st CompactStats
	if err := ctx.Err(); err != nil {
		return st, err
	}
	plan, err := s.planCompact(keep, minDead, &st)
	if err != nil {
		return st, err
	}
	for _, p := range plan {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		copied := st.BytesCopied
		if p.live != nil {
			err = s.rewritePack(p, &st)
		} else {
			err = s.removePack(p.num, nil)
		}
		if errors.Is(err, errPackStays) {
			continue // its copies are harmless duplicates
		}
		if err != nil {
			return st, fmt.Errorf("compact chunk store %s: %w", s.dir, err)
		}
		st.PacksRemoved++
		st.BytesFreed += p.size - (st.BytesCopied - copied)
		if p.live != nil {
			st.PacksRewritten++
		}
	}
	return st, nil
}

// packPlan is what Compact does to one pack: remove it (live is nil) or
// copy live, sorted by offset, and then remove it.
type packPlan struct {
	num  int
	size int64
	live []liveRecord
}

type liveRecord struct {
	id  ID
	loc packLoc
}

// planCompact drops the chunks keep refuses and chooses the packs to
// remove and rewrite from the map alone: all-dead packs first, as they free
// space without taking any.
func (s *PackStore) planCompact(keep func(ID) bool, minDead float64, st *CompactStats) ([]*packPlan, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("compact chunk store %s: store closed", s.dir)
	}
	live := map[int]int64{}
	for id, loc := range s.where {
		if !keep(id) {
			delete(s.where, id)
			delete(s.sidecars, int(loc.pack)) // it lists id: rewritten at Close
			st.ChunksDropped++
			continue
		}
		live[int(loc.pack)] += packHeaderLen + int64(loc.length)
	}
	// A pack being appended to that is mostly dead is sealed (appends go
	// to a new pack) so that it can be rewritten now: a store that drops
	// as much as it adds (continuous replication) would otherwise wait for
	// it to reach the target size before getting any space back.
	if d := s.size - live[s.cur]; s.size >= s.sealMin && d > 0 && float64(d) >= minDead*float64(s.size) {
		if err := s.flushLocked(); err != nil {
			return nil, err
		}
		if err := s.newPack(); err != nil {
			return nil, err
		}
	}
	var dead, rewrite []*packPlan
	byNum := map[int]*packPlan{}
	for n, f := range s.packs {
		if n == s.cur || s.short[n] {
			continue // a short pack may hold records nothing maps
		}
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("compact chunk store %s: %w", s.dir, err)
		}
		size := fi.Size()
		switch d := size - live[n]; {
		case live[n] == 0:
			dead = append(dead, &packPlan{num: n, size: size})
		case d > 0 && float64(d) >= minDead*float64(size):
			p := &packPlan{num: n, size: size, live: []liveRecord{}}
			rewrite = append(rewrite, p)
			byNum[n] = p
		}
	}
	if len(byNum) > 0 {
		for id, loc := range s.where {
			if p := byNum[int(loc.pack)]; p != nil {
				p.live = append(p.live, liveRecord{id, loc})
			}
		}
	}
	for _, p := range rewrite {
		slices.SortFunc(p.live, func(a, b liveRecord) int { return cmp.Compare(a.loc.off, b.loc.off) })
	}
	byNumber := func(a, b *packPlan) int { return a.num - b.num }
	slices.SortFunc(dead, byNumber)
	slices.SortFunc(rewrite, byNumber)
	return append(dead, rewrite...), nil
}

// errPackStays stops the rewrite of a pack holding a live record whose
// header no longer matches the map: the pack is kept as it is.
var errPackStays = errors.New("pack kept: a record's header does not match the map")

// move is a live record copied by Compact, pointed to once durable.
type move struct {
	id       ID
	from, to packLoc
}

// rewritePack copies a pack's live records into the current pack, makes
// the copies durable, points the map at them and removes the pack. It
// reads runs of adjacent records of at most copyBufSize.
func (s *PackStore) rewritePack(p *packPlan, st *CompactStats) error {
	s.mu.Lock()
	f, lost := s.packs[p.num], s.lost
	s.mu.Unlock()
	moves := make([]move, 0, len(p.live))
	var buf []byte
	for i := 0; i < len(p.live); {
		start := p.live[i].loc.off - packHeaderLen
		end, j := start, i
		for ; j < len(p.live); j++ {
			l := p.live[j].loc
			if l.off-packHeaderLen != end || (j > i && l.off+int64(l.length)-start > copyBufSize) {
				break
			}
			end = l.off + int64(l.length)
		}
		buf = slices.Grow(buf[:0], int(end-start))[:end-start]
		if _, err := f.ReadAt(buf, start); err != nil {
			return fmt.Errorf("copy from %s: %w", f.Name(), err)
		}
		if err := s.appendCopies(buf, start, p.live[i:j], &moves, st); err != nil {
			return err
		}
		i = j
	}
	// The copies are durable before the pack goes (their own packs synced
	// here: another Sync may have taken them off the dirty list while its
	// fsync still runs); ctx was checked before this pack and is not again
	// until it is done.
	if err := s.syncPacks(moves); err != nil {
		return err
	}
	return s.removePack(p.num, func() error {
		if s.lost != lost {
			return fmt.Errorf("a write failed while %s was copied: it stays", f.Name())
		}
		for _, m := range moves {
			if s.where[m.id] == m.from {
				s.where[m.id] = m.to
			}
		}
		return nil
	})
}

// appendCopies appends the records in run, read from the pack at start,
// to the current pack.
func (s *PackStore) appendCopies(run []byte, start int64, recs []liveRecord, moves *[]move, st *CompactStats) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("store closed")
	}
	for _, r := range recs {
		rec := run[r.loc.off-packHeaderLen-start : r.loc.off+int64(r.loc.length)-start]
		hdr, body := rec[:packHeaderLen], rec[packHeaderLen:]
		if s.where[r.id] != r.loc {
			continue // forgotten meanwhile
		}
		if string(hdr[:4]) != packMagic || !bytes.Equal(hdr[4:36], r.id[:]) || hdr[36] != r.loc.codec ||
			binary.BigEndian.Uint32(hdr[37:]) != r.loc.length {
			// Damaged since it was scanned: the pack stays, so that nothing
			// readable in it is lost.
			return errPackStays
		}
		to, err := s.appendLocked(hdr, body)
		if err != nil {
			return err
		}
		*moves = append(*moves, move{r.id, r.loc, to})
		st.BytesCopied += int64(len(rec))
	}
	return s.flushIfFullLocked()
}

// syncPacks makes the packs the moves were copied to durable.
func (s *PackStore) syncPacks(moves []move) error {
	return s.syncWith(func() []*os.File {
		files := map[int32]*os.File{}
		for _, m := range moves {
			files[m.to.pack] = s.packs[int(m.to.pack)]
		}
		return slices.Collect(maps.Values(files))
	})
}

// removePack closes and deletes pack n, once before (if not nil), called
// with the store's lock held, has agreed. Nothing in the map may point into
// the pack by then; it is closed once no Get or Sync uses it.
func (s *PackStore) removePack(n int, before func() error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("store closed")
	}
	if before != nil {
		if err := before(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	f := s.packs[n]
	delete(s.packs, n)
	delete(s.dirty, n)
	delete(s.sidecars, n)
	s.mu.Unlock()
	// First the sidecar: a pack left without one is scanned. One left
	// behind (a failed remove) names a pack number never used again.
	_ = s.removeSidecar(n)
	// What was written to the pack no longer matters: a failed Close loses
	// nothing.
	s.files.Lock()
	_ = f.Close()
	s.files.Unlock()
	if err := os.Remove(f.Name()); err != nil {
		return err
	}
	return nil
}
