package s3store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
)

// Store is a chunk store in an S3 bucket: chunks are collected into packs
// of about PackSize, each uploaded as one object with a listing object
// beside it (see pack.go); reads fetch one chunk with a ranged GET, or
// take it from the local cache. Any number of Stores, in any number of
// processes, may write the same bucket and prefix: pack names are their
// content's hash and every object is created at most once, so writers
// never overwrite each other. A Store sees other writers' packs as of its
// opening and each Refresh.
type Store struct {
	b          *bucket
	enc        *zstd.Encoder
	dec        *zstd.Decoder
	packSize   int64
	cache      *chunk.PackStore // nil without a cache
	listDir    string           // cached listings, "" without a cache
	cacheWrite bool

	rebuildMu sync.Mutex // one rebuild of the map at a time

	mu sync.Mutex
	packMap
	gcEpoch   uint64                // of the collection state the map was built from
	condemned map[packName]bool     // packs a collection may delete unless a commit needs them
	deleting  map[packName]bool     // packs a collection is deleting: gone for readers
	recent    *[]addedPack          // packs uploaded while the map is rebuilt; nil when it is not
	open      *packBuf              // being filled; nil if none
	flying    map[*packBuf]struct{} // being uploaded, served from memory meanwhile
	failed    error                 // an upload failed since the last Sync
	slots     chan struct{}         // one per upload under way in the background
	closed    bool
}

// packMap says where each chunk known to the store lies.
type packMap struct {
	where map[chunk.ID]loc
	names []packName // by pack number in where
	known map[packName]int32
}

func newPackMap() packMap {
	return packMap{where: map[chunk.ID]loc{}, known: map[packName]int32{}}
}

// add maps the records of pack n not mapped already.
func (m *packMap) add(n packName, recs []record) {
	if _, ok := m.known[n]; ok {
		return
	}
	p := int32(len(m.names))
	m.names = append(m.names, n)
	m.known[n] = p
	for _, r := range recs {
		if _, ok := m.where[r.id]; !ok {
			m.where[r.id] = loc{pack: p, codec: r.codec, length: r.length, off: r.off}
		}
	}
}

// addedPack is a pack uploaded while the map was being rebuilt.
type addedPack struct {
	name packName
	recs []record
}

// loc is where a stored chunk lies: in pack names[pack], at off.
type loc struct {
	pack   int32
	codec  uint8
	length uint32
	off    int64
}

// packBuf is a pack being filled and then uploaded.
type packBuf struct {
	data []byte
	recs []record
	ids  map[chunk.ID]int // index in recs
	done chan struct{}    // closed when its upload has ended
}

var _ chunk.WriteStore = (*Store)(nil)

// Open opens the store cfg names, reading the listings of every pack in
// it (from the cache when it has them).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	bname, prefix, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	cli, err := newClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxRecordLen))
	if err != nil {
		return nil, err
	}
	s := &Store{
		b:   &bucket{cli: cli, name: bname, prefix: prefix},
		enc: enc, dec: dec, packSize: cfg.PackSize, cacheWrite: cfg.CacheWrites,
		packMap: newPackMap(), flying: map[*packBuf]struct{}{},
	}
	if s.packSize <= 0 {
		s.packSize = DefaultPackSize
	}
	uploads := cfg.Uploads
	if uploads <= 0 {
		uploads = DefaultUploads
	}
	s.slots = make(chan struct{}, uploads)
	s.packSize = min(s.packSize, maxPackLen/2)
	if cfg.CacheDir != "" {
		if err := s.openCache(cfg.CacheDir); err != nil {
			return nil, err
		}
	}
	if err := s.Refresh(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openCache opens the cache directory: DIR/chunks is a chunk.PackStore of
// the chunks fetched, DIR/index the listings read. It holds guest data:
// private to the user.
func (s *Store) openCache(dir string) error {
	s.listDir = filepath.Join(dir, "index")
	if err := os.MkdirAll(s.listDir, 0o700); err != nil {
		return fmt.Errorf("open cache: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("open cache: %w", err)
	}
	cache, err := chunk.OpenPackStore(filepath.Join(dir, "chunks"))
	if err != nil {
		return fmt.Errorf("open cache: %w", err)
	}
	s.cache = cache
	return nil
}

// Refs returns the refs beside the store's packs.
func (s *Store) Refs() *Refs { return &Refs{b: s.b, dir: "refs/"} }

// URL returns s3://BUCKET/PREFIX.
func (s *Store) URL() string { return s.b.url("") }

// Refresh reads the listings of the packs written since the store opened
// or was last refreshed, by this writer or any other, and the state of
// the bucket's garbage collection (gc.go): after a collection deleted
// packs, the whole map is built again.
func (s *Store) Refresh(ctx context.Context) error {
	v, err := s.readGC(ctx)
	if err != nil {
		return fmt.Errorf("open chunk store %s: %w", s.URL(), err)
	}
	if s.applyGC(v) {
		if err := s.rebuild(ctx, v); err != nil {
			return fmt.Errorf("open chunk store %s: %w", s.URL(), err)
		}
		return nil
	}
	names, err := s.listPacks(ctx, v, func(n packName) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, seen := s.known[n]
		return !seen
	})
	if err != nil {
		return fmt.Errorf("open chunk store %s: %w", s.URL(), err)
	}
	for _, n := range names {
		recs, err := s.readListing(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since it was listed: a collection's
		}
		if err != nil {
			return fmt.Errorf("open chunk store %s: %w", s.URL(), err)
		}
		s.mu.Lock()
		s.addPackLocked(n, recs)
		s.mu.Unlock()
	}
	return nil
}

// listPacks returns the packs whose listings exist, save those v says are
// being deleted, for which want returns true.
func (s *Store) listPacks(ctx context.Context, v gcView, want func(packName) bool) ([]packName, error) {
	var names []packName
	err := s.b.list(ctx, "index/", func(o object) error {
		n, ok := parsePackName(o.name)
		if !ok {
			return nil // not a listing: not ours to read
		}
		if !v.deleting[n] && want(n) {
			names = append(names, n)
		}
		return nil
	})
	return names, err
}

// readListing returns the records of pack n: from the cached listing, the
// listing object, or, when that is damaged, from the pack itself.
func (s *Store) readListing(ctx context.Context, n packName) ([]record, error) {
	if s.listDir != "" {
		if b, err := os.ReadFile(filepath.Join(s.listDir, n.String())); err == nil {
			if got, _, recs, err := decodeListing(b); err == nil && got == n {
				return recs, nil
			}
		}
	}
	b, _, err := s.b.get(ctx, listingKey(n), maxListingLen)
	if err != nil {
		return nil, err
	}
	got, _, recs, err := decodeListing(b)
	if err == nil && got != n {
		err = fmt.Errorf("%w: it names pack %s", errBadListing, got)
	}
	if err != nil {
		// The pack is whole or absent (an S3 PUT is atomic): read its
		// records from it instead. Losing the listing loses nothing.
		pack, _, perr := s.b.get(ctx, packKey(n), maxPackLen)
		if perr != nil {
			return nil, fmt.Errorf("listing %s: %w; and its pack: %w", s.b.url(listingKey(n)), err, perr)
		}
		if blake3.Sum256(pack) != n {
			return nil, fmt.Errorf("listing %s: %w; and its pack does not match its name", s.b.url(listingKey(n)), err)
		}
		recs = scanPack(pack)
		b = encodeListing(n, int64(len(pack)), recs)
	}
	if s.listDir != "" {
		// Only the next open's speed depends on it.
		_ = atomicfile.WriteBytes(filepath.Join(s.listDir, n.String()), 0o600, b)
	}
	return recs, nil
}

// addPackLocked maps the records of pack n not mapped already.
func (s *Store) addPackLocked(n packName, recs []record) {
	if s.recent != nil {
		*s.recent = append(*s.recent, addedPack{n, recs})
	}
	s.packMap.add(n, recs)
}

// lookupLocked returns where a stored chunk lies; chunks of packs being
// deleted are not stored.
func (s *Store) lookupLocked(id chunk.ID) (loc, bool) {
	l, ok := s.where[id]
	if ok && s.deleting[s.names[l.pack]] {
		return loc{}, false
	}
	return l, ok
}

// Has reports whether the store holds the chunk, stored or being stored.
func (s *Store) Has(ctx context.Context, id chunk.ID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hasLocked(id), nil
}

func (s *Store) hasLocked(id chunk.ID) bool {
	if _, ok := s.lookupLocked(id); ok {
		return true
	}
	return s.pendingLocked(id) != nil
}

// pendingLocked returns the pack buffer holding id, if one does.
func (s *Store) pendingLocked(id chunk.ID) *packBuf {
	if s.open != nil {
		if _, ok := s.open.ids[id]; ok {
			return s.open
		}
	}
	for p := range s.flying {
		if _, ok := p.ids[id]; ok {
			return p
		}
	}
	return nil
}

// Get returns a chunk, verified against its ID: from memory if it is
// being uploaded, from the cache, or with a ranged GET of its pack (then
// kept in the cache).
func (s *Store) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	l, ok := s.lookupLocked(id)
	var body []byte
	var codec uint8
	if !ok {
		p := s.pendingLocked(id)
		if p == nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("get chunk %s from %s: %w", id.Short(), s.URL(), chunk.ErrChunkMissing)
		}
		r := p.recs[p.ids[id]]
		body, codec = append([]byte(nil), p.data[r.off:r.off+int64(r.length)]...), r.codec
	}
	if !ok {
		s.mu.Unlock()
		return s.decode(id, codec, body, "a pack being uploaded")
	}
	name := s.names[l.pack]
	s.mu.Unlock()
	if s.cache != nil {
		data, err := s.cache.Get(ctx, id)
		if err == nil {
			return data, nil
		}
		var inv *chunk.InvalidChunkError
		if errors.As(err, &inv) {
			s.cache.Forget(id) // damaged on local disk: fetch it again
		}
	}
	where := s.b.url(packKey(name))
	body, err := s.b.getRange(ctx, packKey(name), l.off, int64(l.length))
	if errors.Is(err, ErrNotFound) {
		// A pack listed but gone (lost, or collected since the map was
		// read): the chunk is not held.
		return nil, fmt.Errorf("get chunk %s: %w: %w", id.Short(), chunk.ErrChunkMissing, err)
	}
	if err != nil {
		return nil, fmt.Errorf("get chunk %s: %w", id.Short(), err)
	}
	data, err := s.decode(id, l.codec, body, fmt.Sprintf("%s at %d", where, l.off))
	if err != nil {
		return nil, err
	}
	if s.cache != nil {
		s.keep(ctx, id, data, l.codec, body)
	}
	return data, nil
}

// keep puts a verified chunk in the cache. A cache that cannot take it
// costs a download later, nothing else.
func (s *Store) keep(ctx context.Context, id chunk.ID, data []byte, codec uint8, body []byte) {
	if codec == chunk.CodecZstd {
		_ = s.cache.PutVerified(ctx, id, data, body, false)
	} else {
		_ = s.cache.PutVerified(ctx, id, data, nil, true)
	}
}

// decode decompresses a record's payload and verifies it against id.
func (s *Store) decode(id chunk.ID, codec uint8, body []byte, where string) ([]byte, error) {
	return chunk.Decompress(s.dec, id, codec, body, where)
}

// Put verifies a chunk and adds it to the pack being filled, compressed
// when that saves space. The Put that fills a pack uploads it; until then,
// and until Sync, the chunk is held only in memory.
func (s *Store) Put(ctx context.Context, id chunk.ID, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := chunk.Verify(id, data, "offered to the store"); err != nil {
		return err
	}
	return s.PutVerified(ctx, id, data, nil, false)
}

// PutVerified is Put for a chunk the caller has just verified against id;
// zstd, if not nil, is data compressed with zstd, and raw says data is
// known not to compress (as chunk.PackStore.PutVerified).
func (s *Store) PutVerified(ctx context.Context, id chunk.ID, data, zstd []byte, raw bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ok, _ := s.Has(ctx, id); ok {
		return nil
	}
	body, codec := chunk.Compress(s.enc, data, zstd, raw)
	if len(body) > maxRecordLen {
		return fmt.Errorf("put chunk %s: %d bytes is over the %d limit", id.Short(), len(data), maxRecordLen)
	}
	return s.putRecord(ctx, id, codec, body, s.hasLocked)
}

// putRecord adds a stored chunk's record to the pack being filled, unless
// skip says the store has it, and uploads the pack if that fills it.
func (s *Store) putRecord(ctx context.Context, id chunk.ID, codec uint8, body []byte, skip func(chunk.ID) bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("put chunk %s: store closed", id.Short())
	}
	if skip(id) {
		s.mu.Unlock()
		return nil
	}
	if s.open == nil {
		// Room for a whole pack: growing it by copying cost a fifth of
		// a writer's time.
		s.open = &packBuf{data: make([]byte, 0, s.packSize+recHeaderLen+64<<10), ids: map[chunk.ID]int{}, done: make(chan struct{})}
	}
	p := s.open
	var r record
	p.data, r = appendRecord(p.data, id, codec, body)
	p.ids[id] = len(p.recs)
	p.recs = append(p.recs, r)
	full := int64(len(p.data)) >= s.packSize
	if full {
		s.sealLocked()
	}
	s.mu.Unlock()
	if full {
		s.startUpload(ctx, p)
	}
	return nil
}

// startUpload uploads a sealed pack in the background once fewer than
// Config.Uploads are under way, and waits until then: so a writer
// compresses the next pack while the last travels, and never holds more
// than Uploads+1 packs in memory. The upload runs under ctx; its failure
// is reported by the next Sync.
func (s *Store) startUpload(ctx context.Context, p *packBuf) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		s.upload(ctx, p) // fails at once, and says so at Sync
		return
	}
	go func() {
		defer func() { <-s.slots }()
		s.upload(ctx, p)
	}()
}

// sealLocked ends the pack being filled: it is uploaded next.
func (s *Store) sealLocked() {
	s.flying[s.open] = struct{}{}
	s.open = nil
}

// upload writes a sealed pack, then its listing. On failure its chunks
// are dropped (Has says false again, so they are offered again) and the
// next Sync reports it.
func (s *Store) upload(ctx context.Context, p *packBuf) error {
	defer close(p.done)
	data := p.data
	name := packName(blake3.Sum256(data))
	_, err := s.b.create(ctx, packKey(name), data)
	for try := 0; errors.Is(err, ErrConflict) && try < 3; try++ {
		// A pack of these very bytes exists already: another writer's,
		// a killed writer's orphan, or one a collection is deleting. It
		// is not adopted (a store believes only in packs it created or
		// read a listing of: gc.go): these chunks go into a pack of
		// their own, named apart by a salt record.
		data = appendSalt(p.data)
		name = packName(blake3.Sum256(data))
		_, err = s.b.create(ctx, packKey(name), data)
	}
	if err == nil {
		// A listing already there was written for the same pack, by
		// the writer that created it: the same bytes.
		err = s.createOnce(ctx, listingKey(name), encodeListing(name, int64(len(data)), p.recs))
	}
	s.mu.Lock()
	delete(s.flying, p)
	if err != nil {
		err = fmt.Errorf("upload pack of %d chunks: %w", len(p.recs), err)
		if s.failed == nil {
			s.failed = err
		}
		s.mu.Unlock()
		return err
	}
	s.addPackLocked(name, p.recs)
	s.mu.Unlock()
	if s.cache != nil && s.cacheWrite {
		for _, r := range p.recs {
			body := p.data[r.off : r.off+int64(r.length)]
			if r.codec != chunk.CodecZstd {
				// Verified when it was put: kept as it is.
				_ = s.cache.PutVerified(ctx, r.id, body, nil, true)
			} else if data, err := s.decode(r.id, r.codec, body, "a pack uploaded"); err == nil {
				s.keep(ctx, r.id, data, r.codec, body)
			}
		}
	}
	return nil
}

// createOnce creates an object named by its content's hash: one already
// there holds the same bytes.
func (s *Store) createOnce(ctx context.Context, k string, data []byte) error {
	_, err := s.b.create(ctx, k, data)
	if errors.Is(err, ErrConflict) {
		return nil
	}
	return err
}

// Sync uploads the pack being filled and waits for every upload under
// way: then every chunk Put so far is stored, or Sync says what failed.
// A failed upload is reported once; its chunks are no longer held.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	var mine *packBuf
	if s.open != nil && len(s.open.recs) > 0 {
		mine = s.open
		s.sealLocked()
	}
	var wait []chan struct{}
	for p := range s.flying {
		if p != mine {
			wait = append(wait, p.done)
		}
	}
	s.mu.Unlock()
	if mine != nil {
		if err := s.upload(ctx, mine); err != nil {
			s.takeFailed()
			return fmt.Errorf("sync chunk store %s: %w", s.URL(), err)
		}
	}
	for _, d := range wait {
		select {
		case <-d:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := s.takeFailed(); err != nil {
		return fmt.Errorf("sync chunk store %s: %w", s.URL(), err)
	}
	return nil
}

// takeFailed returns and clears the upload failure to report.
func (s *Store) takeFailed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.failed
	s.failed = nil
	return err
}

// Len returns the number of chunks stored (not counting those in packs
// not uploaded yet).
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.where)
}

// Packs returns the number of packs the store knows.
func (s *Store) Packs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.names)
}

// Close waits for the uploads under way, then closes the cache. It starts
// no upload: chunks not synced are dropped, and Close says how many.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	dropped := 0
	if s.open != nil {
		dropped = len(s.open.recs)
		s.open = nil
	}
	var wait []chan struct{}
	for p := range s.flying {
		wait = append(wait, p.done)
	}
	s.mu.Unlock()
	// Uploads under way end with their own context.
	for _, d := range wait {
		<-d
	}
	var err error
	if s.cache != nil {
		err = s.cache.Close()
	}
	if dropped > 0 {
		return errors.Join(fmt.Errorf("close chunk store %s: %d chunks not synced were dropped (call Sync before Close)", s.URL(), dropped), err)
	}
	return err
}
