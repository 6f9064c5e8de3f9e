package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/chunk"
)

// Garbage collection while other writers write.
//
// What is live is the repository's business (the chunks its kept versions
// use); which packs may go, and when, is the store's. The rule:
//
//  1. Condemn: a collection reads the server's clock, the repository marks
//     what is live, and every pack whose listing is older than the clock
//     minus a minimum age and none of whose chunks is live is condemned:
//     written into the collection state (PREFIX/gc/state, replaced only by
//     compare-and-swap). The minimum age spares the packs of pushes under
//     way, whose versions are not committed yet. Optionally, packs mostly
//     wasted (chunks not live, or copies of chunks a pack that stays
//     holds) are condemned too, once the live chunks only they hold are
//     copied into new packs.
//  2. Barrier: the repository makes every commit that has not yet landed
//     re-read the collection state before it lands (it moves every set's
//     head with a compare-and-swap: a commit that read a head before that
//     fails its own swap and starts again).
//  3. Re-mark and sweep: the repository marks again, and the packs still
//     condemned whose every live chunk is held by a pack that stays (or
//     was copied) are moved, with one compare-and-swap, to
//     "deleting" (the epoch goes up: every store that sees it rebuilds its
//     map), then deleted (listing first), then dropped from the state.
//
// A commit calls Ensure after reading the head it will swap and before
// swapping it: Ensure reads the collection state; a chunk the commit uses
// that lies in a condemned pack revives the pack (a compare-and-swap that
// takes it out of the condemned list, which wins or loses against step 3's
// as a whole); a chunk in a pack being deleted or gone is missing, and the
// commit fails with a *MissingError instead of landing (its caller stores
// those chunks again and retries). Why nothing is lost: take a commit C
// that uses a chunk of pack P, condemned in step 1. If C's swap lands
// before step 2 swaps C's set, step 3 marks C's chunks and spares P. If
// after, C read its head after step 2 (or its swap would fail), so after
// step 1, and its Ensure saw P condemned: it revived P, or found it
// doomed and did not land. A set created after step 2 listed the sets is
// read, by the same argument, after step 1. A pack not condemned in
// step 1 is not deleted in this collection.
//
// What a store believes in is what it can trust: packs it created itself
// (a create that finds the name taken salts the pack and creates it under
// a new name instead of adopting the object there, which may be one being
// deleted) and packs whose listing it read (a pack's listing is written
// only by the writer that created the pack, after it, and deleted before
// it). When a collection starts deleting packs the epoch goes up, and a
// store that sees it builds its map again without them; a store that has
// not seen it yet may answer Has wrongly, which Ensure, reading the state
// first, corrects before any commit lands.
//
// One collection runs at a time on a bucket: Condemn claims the state for
// its collection, and refuses (ErrCollecting) while another's claim is
// younger than StaleCollection; a collection whose claim was taken over
// deletes nothing. Any number of writers and readers may run meanwhile.

const (
	gcStateName = "state"    // gc/state
	clockKey    = "gc/clock" // written to read the server's clock
	// maxGCStateLen bounds the state: about 900 k pack names.
	maxGCStateLen = 64 << 20
)

// gcView is the collection state as a store knows it.
type gcView struct {
	epoch     uint64 // goes up whenever packs start being deleted
	condemned map[packName]bool
	deleting  map[packName]bool
	collector string    // the collection under way, "" for none
	since     time.Time // when it began, by the server's clock
}

// gcJSON is the state's encoding.
type gcJSON struct {
	Epoch     uint64   `json:"epoch"`
	Condemned []string `json:"condemned"`
	Deleting  []string `json:"deleting"`
	Collector string   `json:"collector,omitempty"`
	Since     int64    `json:"since,omitempty"` // Unix seconds
	// Write is unique to each write, as Refs.Update needs.
	Write string `json:"write"`
}

func emptyGC() gcView {
	return gcView{condemned: map[packName]bool{}, deleting: map[packName]bool{}}
}

var errBadGCState = errors.New("damaged collection state")

// decodeGC reads the collection state; every name in it is a pack name.
func decodeGC(b []byte) (gcView, error) {
	var j gcJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return gcView{}, fmt.Errorf("%w: %w", errBadGCState, err)
	}
	v := emptyGC()
	v.epoch = j.Epoch
	v.collector = j.Collector
	if j.Since != 0 {
		v.since = time.Unix(j.Since, 0).UTC()
	}
	for _, l := range []struct {
		names []string
		set   map[packName]bool
	}{{j.Condemned, v.condemned}, {j.Deleting, v.deleting}} {
		for _, s := range l.names {
			n, ok := parsePackName(s)
			if !ok {
				return gcView{}, fmt.Errorf("%w: pack name %.80q", errBadGCState, s)
			}
			l.set[n] = true
		}
	}
	return v, nil
}

func (v gcView) encode() []byte {
	var nonce [8]byte
	rand.Read(nonce[:])
	j := gcJSON{Epoch: v.epoch, Condemned: sortedNames(v.condemned), Deleting: sortedNames(v.deleting),
		Collector: v.collector, Write: hex.EncodeToString(nonce[:])}
	if !v.since.IsZero() {
		j.Since = v.since.Unix()
	}
	b, err := json.Marshal(j)
	if err != nil {
		panic(err) // strings and a number
	}
	return b
}

func sortedNames(set map[packName]bool) []string {
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n.String())
	}
	slices.Sort(out)
	return out
}

func (s *Store) gcRefs() *Refs { return &Refs{b: s.b, dir: "gc/", limit: maxGCStateLen} }

// readGC reads the collection state; none is an empty one.
func (s *Store) readGC(ctx context.Context) (gcView, error) {
	r, err := s.gcRefs().Read(ctx, gcStateName)
	if errors.Is(err, ErrNotFound) {
		return emptyGC(), nil
	}
	if err != nil {
		return gcView{}, fmt.Errorf("collection state: %w", err)
	}
	return decodeGC(r.Data)
}

// errUnchanged ends an updateGC that has nothing to write.
var errUnchanged = errors.New("unchanged")

// updateGC replaces the collection state with what change makes of it, by
// compare-and-swap (Refs.Update); change may run several times, and
// errUnchanged from it writes nothing.
func (s *Store) updateGC(ctx context.Context, change func(v *gcView) error) error {
	_, err := s.gcRefs().Update(ctx, gcStateName, func(cur []byte, exists bool) ([]byte, error) {
		v := emptyGC()
		if exists {
			var err error
			if v, err = decodeGC(cur); err != nil {
				return nil, err
			}
		}
		if err := change(&v); err != nil {
			return nil, err
		}
		return v.encode(), nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

// applyGC takes v as the store's view of the collection and reports
// whether the map must be built again (packs were deleted since it was).
func (s *Store) applyGC(v gcView) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.condemned, s.deleting = v.condemned, v.deleting
	return v.epoch != s.gcEpoch
}

// rebuild builds the map again from the listings there are now, without
// the packs v says are being deleted.
func (s *Store) rebuild(ctx context.Context, v gcView) error {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	var recent []addedPack
	s.mu.Lock()
	s.recent = &recent
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.recent = nil
		s.mu.Unlock()
	}()
	names, err := s.listPacks(ctx, v, func(packName) bool { return true })
	if err != nil {
		return err
	}
	m := newPackMap()
	for _, n := range names {
		recs, err := s.readListing(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		m.add(n, recs)
	}
	s.mu.Lock()
	for _, p := range recent {
		if !v.deleting[p.name] {
			m.add(p.name, p.recs)
		}
	}
	s.packMap, s.gcEpoch = m, v.epoch
	s.mu.Unlock()
	return nil
}

// MissingError reports chunks a commit uses that the store does not hold
// (or holds only in packs a collection is deleting): store them again,
// then commit again.
type MissingError struct {
	IDs []chunk.ID
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%d chunks are not in the store (first %s): store them again", len(e.IDs), e.IDs[0].Short())
}

// Unwrap makes a MissingError a chunk.ErrChunkMissing.
func (e *MissingError) Unwrap() error { return chunk.ErrChunkMissing }

// Ensure uploads what is pending (Sync), then makes sure that every chunk
// of ids is stored and will not be collected by a collection under way:
// packs a collection condemned that hold them are revived. A chunk that is
// not stored, or only in a pack being deleted, makes a *MissingError.
//
// A commit calls it after reading the ref it will swap and before the
// swap; that order is what makes collections safe (see gc.go).
func (s *Store) Ensure(ctx context.Context, ids []chunk.ID) error {
	if err := s.Sync(ctx); err != nil {
		return err
	}
	v, err := s.readGC(ctx)
	if err != nil {
		return fmt.Errorf("ensure chunks: %w", err)
	}
	if s.applyGC(v) {
		if err := s.rebuild(ctx, v); err != nil {
			return fmt.Errorf("ensure chunks: %w", err)
		}
	}
	missing, used := s.classify(ids)
	if len(missing) > 0 {
		// Other writers' packs, stored since the map was read.
		if err := s.Refresh(ctx); err != nil {
			return fmt.Errorf("ensure chunks: %w", err)
		}
		missing, used = s.classify(ids)
	}
	if len(used) > 0 {
		if err := s.revive(ctx, used); err != nil {
			return fmt.Errorf("ensure chunks: %w", err)
		}
		missing, _ = s.classify(ids)
	}
	if len(missing) > 0 {
		return fmt.Errorf("ensure chunks in %s: %w", s.URL(), &MissingError{IDs: missing})
	}
	return nil
}

// classify returns the chunks of ids not stored, and the condemned packs
// holding the others.
func (s *Store) classify(ids []chunk.ID) (missing []chunk.ID, condemned map[packName]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	condemned = map[packName]bool{}
	seen := map[chunk.ID]bool{}
	for _, id := range ids {
		l, ok := s.lookupLocked(id)
		if !ok {
			if !seen[id] {
				seen[id] = true
				missing = append(missing, id)
			}
			continue
		}
		if n := s.names[l.pack]; s.condemned[n] {
			condemned[n] = true
		}
	}
	return missing, condemned
}

// revive takes packs out of the condemned list, unless a collection has
// begun deleting them; then reads the state again.
func (s *Store) revive(ctx context.Context, packs map[packName]bool) error {
	err := s.updateGC(ctx, func(v *gcView) error {
		changed := false
		for p := range packs {
			if v.condemned[p] {
				delete(v.condemned, p)
				changed = true
			}
		}
		if !changed {
			return errUnchanged
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revive condemned packs: %w", err)
	}
	v, err := s.readGC(ctx)
	if err != nil {
		return err
	}
	if s.applyGC(v) {
		return s.rebuild(ctx, v)
	}
	return nil
}

// Clock returns the server's clock: the time it stamps on an object
// written now (S3 stamps whole seconds). Ages of objects are compared
// with it, never with this machine's clock.
func (s *Store) Clock(ctx context.Context) (time.Time, error) {
	if err := s.b.put(ctx, clockKey, nil); err != nil {
		return time.Time{}, err
	}
	var now time.Time
	err := s.b.list(ctx, clockKey, func(o object) error {
		if o.name == "" {
			now = o.modified
		}
		return nil
	})
	if err == nil && now.IsZero() {
		err = fmt.Errorf("read the server's clock: %s not listed after it was written", s.b.url(clockKey))
	}
	return now, err
}

// Collection is a collection begun by Condemn and ended by Sweep (or
// Abandon).
type Collection struct {
	// Clock is the server's time when it began.
	Clock  time.Time
	id     string                // in the state's collector while it runs
	recs   map[packName][]record // of the packs condemned
	all    map[packName][]record // of every pack listed when it began
	copied map[chunk.ID]bool     // chunks copied out of the packs it rewrites
}

// ErrCollecting reports a collection refused because another one is under
// way on the bucket (or, for Sweep, took over from this one).
var ErrCollecting = errors.New("another collection is under way")

// StaleCollection is how long a collection may run before another may
// take over from it (its Sweep then deletes nothing): one that died holds
// the bucket no longer than this.
const StaleCollection = time.Hour

// CollectStats says what a collection did.
type CollectStats struct {
	Packs       int   // packs listed when it began
	Condemned   int   // packs condemned (step 1)
	Spared      int   // of those, packs a commit used since (revived, or live at the re-mark)
	Deleted     int   // packs deleted (with their listings), counting leftovers of a collection cut short
	BytesFreed  int64 // pack bytes deleted
	DeadChunks  int   // records deleted (chunks nothing used, or copies)
	Uncollected int   // packs with no live chunk kept for being younger than the minimum age
	Rewritten   int   // of the packs condemned, packs mostly waste whose other live chunks were copied
	BytesCopied int64 // record bytes copied out of them
}

// CondemnOptions tune what a collection condemns.
type CondemnOptions struct {
	// MinAge spares packs whose listing is younger (by the server's
	// clock): a push under way has stored chunks it has not committed
	// yet. Zero spares only packs written after the collection began.
	MinAge time.Duration
	// Rewrite, above 0, also condemns packs of which at least this
	// fraction of the bytes is waste (chunks nothing uses, or copies of
	// chunks a pack that stays holds: two writers stored the same chunk),
	// after copying their other live chunks into new packs. 0 condemns
	// only packs in which nothing is live.
	Rewrite float64
}

// Condemn begins a collection (step 1 of the rule in gc.go): it condemns
// every pack older than opt.MinAge none of whose chunks live reports
// live, and with opt.Rewrite the packs mostly wasted, once what they alone
// hold is copied. The caller then runs its barrier, marks again and calls
// Sweep (or Abandon). live is called with the store's lock not held.
func (s *Store) Condemn(ctx context.Context, live func(chunk.ID) bool, opt CondemnOptions) (*Collection, CollectStats, error) {
	var st CollectStats
	clock, err := s.Clock(ctx)
	if err != nil {
		return nil, st, fmt.Errorf("collect %s: %w", s.URL(), err)
	}
	v, err := s.readGC(ctx)
	if err != nil {
		return nil, st, fmt.Errorf("collect %s: %w", s.URL(), err)
	}
	if v.collector != "" && clock.Sub(v.since) < StaleCollection {
		return nil, st, fmt.Errorf("collect %s: %w since %s", s.URL(), ErrCollecting, v.since.Format(time.RFC3339))
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	c := &Collection{Clock: clock, id: hex.EncodeToString(nonce[:]), recs: map[packName][]record{},
		all: map[packName][]record{}, copied: map[chunk.ID]bool{}}
	young := map[packName]bool{}
	var names []packName
	err = s.b.list(ctx, "index/", func(o object) error {
		n, ok := parsePackName(o.name)
		if !ok || v.deleting[n] {
			return nil
		}
		names = append(names, n)
		young[n] = !o.modified.Before(clock.Add(-opt.MinAge))
		return nil
	})
	if err != nil {
		return nil, st, fmt.Errorf("collect %s: %w", s.URL(), err)
	}
	slices.SortFunc(names, func(a, b packName) int { return bytes.Compare(a[:], b[:]) })
	st.Packs = len(names)
	for _, n := range names {
		recs, err := s.readListing(ctx, n)
		if err != nil {
			return nil, st, fmt.Errorf("collect %s: %w", s.URL(), err)
		}
		c.all[n] = recs
		switch {
		case anyLive(recs, live):
		case young[n]:
			st.Uncollected++
		default:
			c.recs[n] = recs
		}
	}
	if opt.Rewrite > 0 {
		if err := s.condemnWaste(ctx, c, names, young, live, opt.Rewrite, &st); err != nil {
			return nil, st, fmt.Errorf("collect %s: %w", s.URL(), err)
		}
	}
	st.Condemned = len(c.recs)
	err = s.updateGC(ctx, func(v *gcView) error {
		if v.collector != "" && clock.Sub(v.since) < StaleCollection {
			return fmt.Errorf("%w since %s", ErrCollecting, v.since.Format(time.RFC3339))
		}
		v.collector, v.since = c.id, clock
		v.condemned = map[packName]bool{}
		for n := range c.recs {
			if !v.deleting[n] {
				v.condemned[n] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, st, fmt.Errorf("collect %s: condemn %d packs: %w", s.URL(), len(c.recs), err)
	}
	return c, st, nil
}

// condemnWaste condemns the old packs (in name order) of which at least
// rewrite of the bytes is waste: chunks not live, or held by another pack
// that stays. The live chunks only such a pack holds are first copied
// into packs of this store, uploaded before it returns.
func (s *Store) condemnWaste(ctx context.Context, c *Collection, names []packName, young map[packName]bool,
	live func(chunk.ID) bool, rewrite float64, st *CollectStats) error {
	holders := map[chunk.ID]int{} // packs that stay holding each chunk
	for n, recs := range c.all {
		if _, gone := c.recs[n]; !gone {
			for _, r := range recs {
				holders[r.id]++
			}
		}
	}
	for _, n := range names {
		if _, gone := c.recs[n]; gone || young[n] {
			continue
		}
		recs := c.all[n]
		var waste, total int64
		var keep []record
		for _, r := range recs {
			total += int64(r.length)
			switch {
			case !live(r.id) || holders[r.id] > 1:
				waste += int64(r.length)
			default:
				keep = append(keep, r)
			}
		}
		if total == 0 || float64(waste) < rewrite*float64(total) {
			continue
		}
		if len(keep) > 0 {
			pack, _, err := s.b.get(ctx, packKey(n), maxPackLen)
			if err != nil {
				return fmt.Errorf("rewrite pack %s: %w", n, err)
			}
			if packName(blake3.Sum256(pack)) != n {
				continue // damaged: left alone, reads report it
			}
			for _, r := range keep {
				body := pack[r.off : r.off+int64(r.length)]
				if _, err := s.decode(r.id, r.codec, body, s.b.url(packKey(n))); err != nil {
					return fmt.Errorf("rewrite pack %s: %w", n, err)
				}
				if err := s.putRecord(ctx, r.id, r.codec, body, s.pendingHasLocked); err != nil {
					return fmt.Errorf("rewrite pack %s: %w", n, err)
				}
				c.copied[r.id] = true
				st.BytesCopied += int64(r.length)
			}
		}
		for _, r := range recs {
			holders[r.id]--
		}
		for _, r := range keep {
			holders[r.id]++
		}
		c.recs[n] = recs
		st.Rewritten++
	}
	if err := s.Sync(ctx); err != nil {
		return fmt.Errorf("rewrite packs: %w", err)
	}
	return nil
}

// pendingHasLocked reports whether a pack not uploaded yet holds id.
func (s *Store) pendingHasLocked(id chunk.ID) bool { return s.pendingLocked(id) != nil }

func anyLive(recs []record, live func(chunk.ID) bool) bool {
	for _, r := range recs {
		if live(r.id) {
			return true
		}
	}
	return false
}

// Sweep ends a collection (step 3 of the rule in gc.go), after the
// caller's barrier: live must now report what the repository holds after
// the barrier. The packs still condemned that hold no live chunk are
// deleted; the others are condemned no more.
func (s *Store) Sweep(ctx context.Context, c *Collection, live func(chunk.ID) bool, st CollectStats) (CollectStats, error) {
	var deleting []packName
	err := s.updateGC(ctx, func(v *gcView) error {
		if v.collector != c.id {
			return fmt.Errorf("%w: it took over from this one, which deletes nothing", ErrCollecting)
		}
		// What stays: the packs listed when the collection began, save
		// those condemned now (revived ones stay), and the copies it made.
		kept := map[chunk.ID]bool{}
		for n, recs := range c.all {
			if !v.condemned[n] && !v.deleting[n] {
				for _, r := range recs {
					kept[r.id] = true
				}
			}
		}
		doomed := 0
		for n := range v.condemned {
			recs, ok := c.recs[n]
			if ok && !slices.ContainsFunc(recs, func(r record) bool { return live(r.id) && !kept[r.id] && !c.copied[r.id] }) {
				v.deleting[n] = true
				doomed++
			}
		}
		st.Spared = st.Condemned - doomed
		v.condemned = map[packName]bool{}
		if len(v.deleting) > 0 {
			v.epoch++
		}
		deleting = slices.Collect(func(yield func(packName) bool) {
			for n := range v.deleting {
				if !yield(n) {
					return
				}
			}
		})
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("collect %s: %w", s.URL(), err)
	}
	sizes, err := s.packSizes(ctx)
	if err != nil {
		return st, fmt.Errorf("collect %s: %w", s.URL(), err)
	}
	deleted := map[packName]bool{}
	for _, n := range deleting {
		if err := s.b.remove(ctx, listingKey(n)); err != nil {
			return st, fmt.Errorf("collect %s: %w", s.URL(), err)
		}
		if err := s.b.remove(ctx, packKey(n)); err != nil {
			return st, fmt.Errorf("collect %s: %w", s.URL(), err)
		}
		deleted[n] = true
		st.Deleted++
		st.BytesFreed += sizes[n]
		st.DeadChunks += len(c.recs[n])
	}
	err = s.updateGC(ctx, func(v *gcView) error {
		for n := range deleted {
			delete(v.deleting, n)
		}
		if v.collector == c.id {
			v.collector, v.since = "", time.Time{}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("collect %s: %w", s.URL(), err)
	}
	if err := s.Refresh(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// Abandon ends a collection that will not sweep (its barrier failed, say):
// what it condemned is condemned no more, and another may begin.
func (s *Store) Abandon(ctx context.Context, c *Collection) error {
	err := s.updateGC(ctx, func(v *gcView) error {
		if v.collector != c.id {
			return errUnchanged
		}
		v.collector, v.since = "", time.Time{}
		v.condemned = map[packName]bool{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("abandon collection of %s: %w", s.URL(), err)
	}
	return nil
}

// Census counts what a store holds in the bucket.
type Census struct {
	Packs     int   // packs with a listing (save those being deleted)
	PackBytes int64 // their bytes
	Records   int   // chunk records in them
	Chunks    int   // distinct chunks among the records
	Copies    int   // records of a chunk another record already holds
}

// Census lists the bucket's packs and reads their listings (from the
// cache when it has them) to count the chunks stored, and how many are
// stored more than once.
func (s *Store) Census(ctx context.Context) (Census, error) {
	var c Census
	v, err := s.readGC(ctx)
	if err != nil {
		return c, fmt.Errorf("census of %s: %w", s.URL(), err)
	}
	sizes, err := s.packSizes(ctx)
	if err != nil {
		return c, fmt.Errorf("census of %s: %w", s.URL(), err)
	}
	names, err := s.listPacks(ctx, v, func(packName) bool { return true })
	if err != nil {
		return c, fmt.Errorf("census of %s: %w", s.URL(), err)
	}
	seen := map[chunk.ID]bool{}
	for _, n := range names {
		recs, err := s.readListing(ctx, n)
		if err != nil {
			return c, fmt.Errorf("census of %s: %w", s.URL(), err)
		}
		c.Packs++
		c.PackBytes += sizes[n]
		for _, r := range recs {
			c.Records++
			if seen[r.id] {
				c.Copies++
			}
			seen[r.id] = true
		}
	}
	c.Chunks = len(seen)
	return c, nil
}

// packSizes lists the pack objects' sizes.
func (s *Store) packSizes(ctx context.Context) (map[packName]int64, error) {
	sizes := map[packName]int64{}
	err := s.b.list(ctx, "packs/", func(o object) error {
		if n, ok := parsePackName(o.name); ok {
			sizes[n] = o.size
		}
		return nil
	})
	return sizes, err
}
