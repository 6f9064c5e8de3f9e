package chunk

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/internal/directio"
	"github.com/ntc-project/ntc/internal/filelock"
)

// PackStore keeps chunks appended to large pack files, which costs a few
// system calls per megabyte instead of several per chunk as one file per
// chunk does. Each record is self-describing:
//
//	magic "NTCK" | ID (32 bytes) | codec (1 byte) | length (u32, big-endian) | payload
//
// A pack is only ever appended to. The map from ID to record is rebuilt on
// open by reading the records' headers; a record torn by a crash fails its
// header or its BLAKE3 check and is ignored. Sync makes everything appended
// so far durable; Get verifies every chunk against its ID. Compact (see
// packgc.go) removes packs; a pack's number is never used again.
type PackStore struct {
	dir    string
	enc    *zstd.Encoder
	dec    *zstd.Decoder
	target int64 // a pack is not grown past this size
	// sealMin is the size from which Compact seals a mostly dead pack
	// being appended to (sealMinSize).
	sealMin int64

	gc sync.Mutex // held by Compact: one at a time
	// files is held for reading while a pack file is used outside mu, and
	// for writing while Compact closes one it removed.
	files sync.RWMutex

	mu    sync.Mutex
	where map[ID]packLoc
	packs map[int]*os.File // by pack number: pack-NNNNNN.dat
	last  int              // the highest pack number in use
	cur   int              // the number of the pack being appended to
	size  int64            // its size, including space reserved by writes in flight
	dirty map[int]bool
	// short marks the packs whose records stop before the file ends (a
	// torn tail, or a damaged header hiding the records after it): Compact
	// leaves them alone.
	short map[int]bool
	// sidecars is, per pack with a valid sidecar, the length it covers.
	sidecars map[int]int64
	lost     int // appends dropped by failed writes, ever
	closed   bool
	lock     *os.File

	// Appends collect in buf, written to the current pack at bufOff in
	// large writes: one write system call per chunk costs more than
	// moving the data. The bytes before bufOff are written.
	buf    []byte
	bufOff int64
	// A full buffer's whole blocks go to the pack by direct I/O (direct,
	// opened on pack directPack) and the rest stays in buf for the next
	// write: a received chunk is not read back soon, and copying it into
	// fresh page-cache pages cost the receiver of a first push a quarter
	// of its CPU. buf's first byte sits at bufOff's position within an
	// aligned block of mem. noDirect: the file system refused it.
	direct     *os.File
	directPack int
	noDirect   bool
	mem        []byte
}

// packBufSize is how much a PackStore collects before writing.
const packBufSize = 4 << 20

// ErrStoreBusy reports a store another process has open for writing
// (it comes wrapped with filelock.ErrBusy).
var ErrStoreBusy = errors.New("chunk store busy")

type packLoc struct {
	pack   int32 // pack number
	codec  uint8
	length uint32
	off    int64 // offset of the payload
}

var _ Store = (*PackStore)(nil)

const (
	packMagic      = "NTCK"
	packHeaderLen  = 4 + 32 + 1 + 4
	packTargetSize = 1 << 30
	maxRecordLen   = 128 << 20
)

// OpenPackStore opens, creating if needed, the pack store in dir.
func OpenPackStore(dir string) (*PackStore, error) {
	pdir := filepath.Join(dir, "packs")
	// Chunks are guest data: private, also in a store an older ntc made.
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	if err := os.Chmod(pdir, 0o700); err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxRecordLen))
	if err != nil {
		return nil, err
	}
	s := newPackStore(dir, dec)
	s.enc = enc
	// One writer at a time: two processes appending to the same pack would
	// interleave records.
	lock, err := filelock.TryLock(filepath.Join(pdir, "lock"))
	if errors.Is(err, filelock.ErrBusy) {
		return nil, fmt.Errorf("open chunk store %s: %w (%w)", dir, ErrStoreBusy, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	s.lock = lock
	nums, err := listPacks(pdir)
	if err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	for _, n := range nums {
		f, err := os.OpenFile(filepath.Join(pdir, packName(n)), os.O_RDWR, 0)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open chunk store: %w", err)
		}
		s.packs[n], s.last = f, n
		end, err := s.load(n, f)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open chunk store: %s: %w", packName(n), err)
		}
		s.cur, s.size = n, end
	}
	if len(s.packs) == 0 {
		if err := s.newPack(); err != nil {
			s.Close()
			return nil, err
		}
	} else if fi, err := s.packs[s.cur].Stat(); err != nil || fi.Size() != s.size {
		// A torn tail (a crash mid-append): leave it, append elsewhere.
		if err := s.newPack(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func newPackStore(dir string, dec *zstd.Decoder) *PackStore {
	return &PackStore{dir: dir, dec: dec, target: packTargetSize, sealMin: sealMinSize,
		where: map[ID]packLoc{}, packs: map[int]*os.File{}, dirty: map[int]bool{}, short: map[int]bool{}, sidecars: map[int]int64{}}
}

// packName is the file name of pack number n.
func packName(n int) string { return fmt.Sprintf("pack-%06d.dat", n) }

// listPacks lists the numbers of the pack files in pdir, oldest first.
func listPacks(pdir string) ([]int, error) {
	ents, err := os.ReadDir(pdir)
	if err != nil {
		return nil, err
	}
	var nums []int
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), "pack-")
		s, ok2 := strings.CutSuffix(s, ".dat")
		n, err := strconv.Atoi(s)
		if ok && ok2 && err == nil && n > 0 && n <= math.MaxInt32 && e.Name() == packName(n) {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	return nums, nil
}

// scan reads a pack's record headers from offset from on into the map
// (mapRecord) and returns where the last whole record ends; a pack whose
// records stop before its end is marked short.
func (s *PackStore) scan(pack int, f *os.File, from int64) (end int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	defer func() {
		if end < size {
			s.short[pack] = true
		}
	}()
	r := bufio.NewReaderSize(io.NewSectionReader(f, from, size-from), 1<<20)
	var hdr [packHeaderLen]byte
	off := from
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return off, nil // end, or a torn header
		}
		if string(hdr[:4]) != packMagic {
			return off, nil
		}
		n := binary.BigEndian.Uint32(hdr[37:])
		if n > maxRecordLen || off+packHeaderLen+int64(n) > size {
			return off, nil
		}
		var id ID
		copy(id[:], hdr[4:36])
		loc := packLoc{pack: int32(pack), codec: hdr[36], length: n, off: off + packHeaderLen}
		var body []byte
		if _, dup := s.where[id]; dup {
			body = make([]byte, n)
			if _, err := io.ReadFull(r, body); err != nil {
				return off, nil
			}
		} else if _, err := r.Discard(int(n)); err != nil {
			return off, nil
		}
		if err := s.mapRecord(f, id, loc, body); err != nil {
			return off, err
		}
		off += packHeaderLen + int64(n)
	}
}

// verifyRecord checks a record's payload against its ID.
func (s *PackStore) verifyRecord(id ID, codec uint8, body []byte) error {
	data := body
	switch codec {
	case codecRaw:
	case codecZstd:
		var err error
		if data, err = s.dec.DecodeAll(body, nil); err != nil {
			return &InvalidChunkError{ID: id, Where: err.Error()}
		}
	default:
		return &InvalidChunkError{ID: id, Where: fmt.Sprintf("unknown codec %d", codec)}
	}
	return Verify(id, data, "pack record")
}

// newPack starts a pack numbered after every pack there is or was, so
// that names sort in the order packs were made.
func (s *PackStore) newPack() error {
	n := s.last + 1
	f, err := os.OpenFile(filepath.Join(s.dir, "packs", packName(n)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("chunk store: new pack: %w", err)
	}
	s.packs[n], s.last = f, n
	s.cur, s.size = n, 0
	s.dirty[s.cur] = true
	return nil
}

// Dir returns the store's directory.
func (s *PackStore) Dir() string { return s.dir }

// Has reports whether the store holds the chunk.
func (s *PackStore) Has(ctx context.Context, id ID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	_, ok := s.where[id]
	s.mu.Unlock()
	return ok, nil
}

// Get reads, decompresses and verifies a chunk.
func (s *PackStore) Get(ctx context.Context, id ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	buf, loc, name, err := s.readRecord(id)
	if err != nil {
		return nil, err
	}
	return Decompress(s.dec, id, loc.codec, buf, fmt.Sprintf("%s at %d", name, loc.off))
}

// readRecord reads the payload of a chunk's record.
func (s *PackStore) readRecord(id ID) ([]byte, packLoc, string, error) {
	s.files.RLock()
	defer s.files.RUnlock()
	s.mu.Lock()
	loc, ok := s.where[id]
	f := s.packs[int(loc.pack)]
	switch {
	case !ok:
		s.mu.Unlock()
		return nil, loc, "", fmt.Errorf("get chunk %s: %w", id.Short(), ErrChunkMissing)
	case f == nil:
		s.mu.Unlock()
		return nil, loc, "", fmt.Errorf("get chunk %s: pack %d is gone", id.Short(), loc.pack)
	}
	buf := make([]byte, loc.length)
	// What is still in the buffer is read from it: all of a record
	// appended since the last write, the end of one that a write of
	// whole blocks cut.
	inFile := int64(len(buf))
	if int(loc.pack) == s.cur && len(s.buf) > 0 && loc.off+inFile > s.bufOff {
		from := max(loc.off, s.bufOff)
		copy(buf[from-loc.off:], s.buf[from-s.bufOff:])
		inFile = from - loc.off
	}
	s.mu.Unlock()
	if inFile == 0 {
		return buf, loc, f.Name(), nil
	}
	if _, err := f.ReadAt(buf[:inFile], loc.off); err != nil {
		return nil, loc, "", fmt.Errorf("get chunk %s: %w", id.Short(), err)
	}
	return buf, loc, f.Name(), nil
}

// Put verifies a chunk and appends it, compressed when that saves space.
func (s *PackStore) Put(ctx context.Context, id ID, data []byte) error {
	if err := Verify(id, data, "offered to the store"); err != nil {
		return err
	}
	return s.PutVerified(ctx, id, data, nil, false)
}

// PutVerified is Put for a chunk the caller has just verified against id,
// and whose compressed form may already be known, as when it arrives from
// the network: zstd, if not nil, is data compressed with zstd; raw says
// data is known not to compress. Either way no compression is attempted
// again. Get still verifies the chunk on every read.
func (s *PackStore) PutVerified(ctx context.Context, id ID, data, zstd []byte, raw bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ok, _ := s.Has(ctx, id); ok {
		return nil
	}
	// The record is its header and body: the body compressed here only
	// when the caller knows nothing about how the data compresses.
	body, codec := data, byte(codecRaw)
	switch {
	case zstd != nil:
		body, codec = zstd, codecZstd
	case !raw:
		if c := s.enc.EncodeAll(data, make([]byte, 0, len(data)/2)); len(c) < len(data) {
			body, codec = c, codecZstd
		}
	}
	if len(body) > maxRecordLen {
		return fmt.Errorf("put chunk %s: %d bytes is over the %d limit", id.Short(), len(data), maxRecordLen)
	}
	var hdr [packHeaderLen]byte
	copy(hdr[:], packMagic)
	copy(hdr[4:], id[:])
	hdr[36] = codec
	binary.BigEndian.PutUint32(hdr[37:], uint32(len(body)))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("put chunk %s: store closed", id.Short())
	}
	if _, ok := s.where[id]; ok {
		return nil
	}
	loc, err := s.appendLocked(hdr[:], body)
	if err != nil {
		return err
	}
	s.where[id] = loc
	return s.flushIfFullLocked()
}

// appendLocked adds a record (hdr and body) to the current pack's buffer,
// starting a new pack first if it would grow past the target, and returns
// where the record's payload will be.
func (s *PackStore) appendLocked(hdr, body []byte) (packLoc, error) {
	recLen := int64(len(hdr) + len(body))
	if s.size+recLen > s.target && s.size > 0 {
		if err := s.flushLocked(); err != nil {
			return packLoc{}, err
		}
		if err := s.newPack(); err != nil {
			return packLoc{}, err
		}
	}
	if len(s.buf) == 0 {
		s.bufOff = s.size
		if len(s.mem) == 0 {
			s.mem = directio.Bytes(packBufSize + 1<<20 + int(directio.Align))
		}
		k := int(s.bufOff % directio.Align)
		s.buf = s.mem[k:k]
	}
	off := s.size
	s.buf = append(append(s.buf, hdr...), body...)
	s.size += recLen
	return packLoc{pack: int32(s.cur), codec: hdr[36], length: uint32(len(body)), off: off + packHeaderLen}, nil
}

func (s *PackStore) flushIfFullLocked() error {
	if len(s.buf) >= packBufSize {
		return s.flushBlocksLocked()
	}
	return nil
}

// flushBlocksLocked writes the buffer's whole blocks to the current pack
// by direct I/O, the bytes before them (the end of a block that was
// written through the page cache) through the page cache, and keeps the
// rest in the buffer. Without direct I/O it is flushLocked. A block the
// page cache holds is never written directly: see package directio.
func (s *PackStore) flushBlocksLocked() error {
	lo, hi := directio.Blocks(s.bufOff, len(s.buf))
	d := s.directFileLocked()
	if d == nil || lo >= hi || !directio.Aligned(s.buf[lo:]) {
		return s.flushLocked()
	}
	f := s.packs[s.cur]
	s.dirty[s.cur] = true
	if _, err := f.WriteAt(s.buf[:lo], s.bufOff); err != nil {
		return s.failLocked(f, err)
	}
	if _, err := d.WriteAt(s.buf[lo:hi], s.bufOff+lo); err != nil {
		if errors.Is(err, unix.EINVAL) {
			// Refused, nothing written: through the page cache from now.
			s.noDirect = true
			return s.flushLocked()
		}
		return s.failLocked(f, err)
	}
	s.buf = s.buf[:copy(s.buf, s.buf[hi:])]
	s.bufOff += hi
	return nil
}

// directFileLocked returns the current pack opened for direct writes, or
// nil.
func (s *PackStore) directFileLocked() *os.File {
	if s.noDirect {
		return nil
	}
	if s.direct != nil && s.directPack == s.cur {
		return s.direct
	}
	s.closeDirectLocked()
	if s.direct = directio.Open(s.packs[s.cur].Name()); s.direct == nil {
		s.noDirect = true
		return nil
	}
	s.directPack = s.cur
	return s.direct
}

func (s *PackStore) closeDirectLocked() error {
	if s.direct == nil {
		return nil
	}
	err := s.direct.Close()
	s.direct = nil
	return err
}

// flushLocked writes the collected appends to the current pack. On failure
// the records it held are forgotten and appends go to a new pack.
func (s *PackStore) flushLocked() error {
	if len(s.buf) == 0 {
		return nil
	}
	f := s.packs[s.cur]
	_, err := f.WriteAt(s.buf, s.bufOff)
	s.dirty[s.cur] = true
	if err != nil {
		return s.failLocked(f, err)
	}
	s.buf = s.buf[:0]
	return nil
}

// failLocked forgets the records in the buffer, which could not be
// written to pack file f, and starts a new pack.
func (s *PackStore) failLocked(f *os.File, err error) error {
	for id, loc := range s.where {
		if int(loc.pack) == s.cur && loc.off >= s.bufOff && loc.off < s.bufOff+int64(len(s.buf)) {
			delete(s.where, id)
		}
	}
	s.lost++
	s.buf = s.buf[:0]
	s.newPack()
	return fmt.Errorf("chunk store: write %s: %w", f.Name(), err)
}

// Sync makes every chunk appended so far durable.
func (s *PackStore) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.syncWith(func() []*os.File {
		var files []*os.File
		for p := range s.dirty {
			files = append(files, s.packs[p])
		}
		clear(s.dirty)
		return files
	})
}

// syncWith writes what is buffered, then fsyncs the packs pick returns
// (called with mu held) and the directory.
func (s *PackStore) syncWith(pick func() []*os.File) error {
	s.files.RLock()
	defer s.files.RUnlock()
	s.mu.Lock()
	if err := s.flushLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	files := pick()
	s.mu.Unlock()
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync chunk store: %w", err)
		}
	}
	return s.syncDir()
}

// syncDir makes the packs directory's entries durable.
func (s *PackStore) syncDir() error {
	d, err := os.Open(filepath.Join(s.dir, "packs"))
	if err != nil {
		return fmt.Errorf("sync chunk store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return fmt.Errorf("sync chunk store: %w", err)
	}
	return nil
}

// Forget drops a chunk from the store's map (a damaged one, so that it can
// be stored again); its bytes stay in the pack until the pack is rewritten.
func (s *PackStore) Forget(id ID) {
	s.mu.Lock()
	if loc, ok := s.where[id]; ok {
		delete(s.sidecars, int(loc.pack))
	}
	delete(s.where, id)
	s.mu.Unlock()
}

// Len returns the number of chunks held.
func (s *PackStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.where)
}

// Close closes the pack files.
func (s *PackStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	first := s.flushLocked()
	if err := s.closeDirectLocked(); err != nil && first == nil {
		first = err
	}
	for _, f := range s.packs {
		if err := f.Sync(); err != nil && first == nil {
			first = err
		}
	}
	if first == nil {
		// Only the next open's speed depends on them: a sidecar not
		// written means that pack is scanned.
		_ = s.writeSidecars()
	}
	s.closed = true
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	for _, f := range s.packs {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
