package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
)

// Repo is a receiver's repository: a chunk store and, per set, its
// committed versions and the materialized images of the current one.
//
//	DIR/packs/…                      the chunk store (chunk.PackStore)
//	DIR/sets/SET/v000042/            a committed version: manifest.json,
//	                                 meta, one IMAGE.idx per image
//	DIR/sets/SET/CURRENT             the current version's directory name
//	DIR/sets/SET/images/IMAGE        the current version's images as files
//	DIR/sets/SET/images/.state.json  which version the files hold
//	DIR/tmp/                         versions being assembled
//
// A version is committed when its directory is renamed into place and
// CURRENT names it, both atomically, after its chunks are durable. The
// previous version (its indexes and chunks) stays intact throughout.
type Repo struct {
	dir   string
	store *chunk.PackStore

	mu    gosync.Mutex
	locks map[string]*setLock
	// gate keeps garbage collections (see collect) and pushes apart.
	gate pushGate
}

// setLock serializes pushes of one set. The holder's owner (the peer) and
// cancel let a newer push from the same peer take over from one whose
// sender went away without a word (killed, or its link dropped).
type setLock struct {
	ch     chan struct{}
	owner  string
	cancel func()
}

// Manifest describes a committed version.
type Manifest struct {
	Set     string          `json:"set"`
	Version uint64          `json:"version"`
	Base    uint64          `json:"base"`
	Created time.Time       `json:"created"`
	Sender  string          `json:"sender,omitempty"`
	Images  []ImageManifest `json:"images"`
}

// ImageManifest describes one image of a version.
type ImageManifest struct {
	Name   string   `json:"name"`
	Size   int64    `json:"size"`
	Index  string   `json:"index"`
	Digest chunk.ID `json:"digest"`
	Params string   `json:"params"`
	Chunks int      `json:"chunks"`
}

// OpenRepo opens, creating if needed, the repository in dir, for one
// process at a time.
func OpenRepo(dir string) (*Repo, error) {
	// Versions are guest data: private, also in a repository an older
	// ntc made.
	for _, d := range []string{"sets", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
		if err := os.Chmod(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
	}
	st, err := chunk.OpenPackStore(dir)
	if err != nil {
		return nil, err
	}
	// The store's lock is this process's: what DIR/tmp holds (versions
	// being assembled, or removed, when a process died) is garbage.
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range ents {
			os.RemoveAll(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	return &Repo{dir: dir, store: st, locks: map[string]*setLock{}}, nil
}

// OpenRepoForReading opens the repository in dir to list and read its
// manifests and indexes, while another process may be serving it.
func OpenRepoForReading(dir string) (*Repo, error) {
	if _, err := os.Stat(filepath.Join(dir, "sets")); err != nil {
		return nil, fmt.Errorf("open repository %s: %w (is it a directory that 'ntc serve --store' created?)", dir, err)
	}
	return &Repo{dir: dir, locks: map[string]*setLock{}}, nil
}

// Close releases the repository's chunk store.
func (r *Repo) Close() error {
	if r.store == nil {
		return nil
	}
	return r.store.Close()
}

// Store returns the repository's chunk store (nil when opened for reading).
func (r *Repo) Store() *chunk.PackStore { return r.store }

// Dir returns the repository's directory.
func (r *Repo) Dir() string { return r.dir }

// lockWait is how long a push waits for another push of the same set
// before giving up as busy.
const lockWait = 10 * time.Second

// lock takes the set for one push by owner. A push by the same owner that
// is still in progress is cancelled first: a sender pushes a set once at a
// time, so the older push is one whose sender is gone.
func (r *Repo) lock(ctx context.Context, set, owner string, cancel func()) (func(), error) {
	r.mu.Lock()
	l, ok := r.locks[set]
	if !ok {
		l = &setLock{ch: make(chan struct{}, 1)}
		r.locks[set] = l
	}
	if l.owner == owner && l.cancel != nil {
		l.cancel()
	}
	r.mu.Unlock()
	t := time.NewTimer(lockWait)
	defer t.Stop()
	select {
	case l.ch <- struct{}{}:
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r.mu.Lock()
	l.owner, l.cancel = owner, cancel
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		l.owner, l.cancel = "", nil
		r.mu.Unlock()
		<-l.ch
	}, nil
}

func versionDir(v uint64) string { return fmt.Sprintf("v%06d", v) }

// Current returns the manifest of the set's current version, or nil when
// the set has none.
func (r *Repo) Current(set string) (*Manifest, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	b, err := r.readFile(path.Join("sets", set, "CURRENT"), maxCurrentFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read current version of %s: %w", set, err)
	}
	name := strings.TrimSpace(string(b))
	v, err := strconv.ParseUint(strings.TrimPrefix(name, "v"), 10, 64)
	if err != nil || !strings.HasPrefix(name, "v") {
		return nil, fmt.Errorf("set %s: CURRENT holds %q, want a version like v000001", set, name)
	}
	return r.Manifest(set, v)
}

// Manifest reads a committed version's manifest.
func (r *Repo) Manifest(set string, v uint64) (*Manifest, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	p := path.Join("sets", set, versionDir(v), "manifest.json")
	b, err := r.readFile(p, maxManifestFile)
	if err != nil {
		return nil, fmt.Errorf("read version %d of %s: %w", v, set, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return &m, nil
}

// Index reads the index of one image of a committed version.
func (r *Repo) Index(set string, v uint64, image string) (*chunk.Index, error) {
	if err := CheckName(image); err != nil {
		return nil, err
	}
	if err := CheckName(set); err != nil {
		return nil, err
	}
	return r.readIndex(path.Join("sets", set, versionDir(v), image+".idx"))
}

// Meta returns the metadata the sender attached to a version.
func (r *Repo) Meta(set string, v uint64) ([]byte, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	return r.readFile(path.Join("sets", set, versionDir(v), "meta"), maxMeta)
}

// ImagePath is where the current version's image is materialized.
func (r *Repo) ImagePath(set, image string) string {
	return filepath.Join(r.dir, "sets", set, "images", image)
}

// SetInfo summarizes a set for listing.
type SetInfo struct {
	Set      string    `json:"set"`
	Versions []uint64  `json:"versions"`
	Current  *Manifest `json:"current,omitempty"`
}

// List returns every set with its committed versions.
func (r *Repo) List() ([]SetInfo, error) {
	ents, err := os.ReadDir(filepath.Join(r.dir, "sets"))
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	var out []SetInfo
	for _, e := range ents {
		if !e.IsDir() || CheckName(e.Name()) != nil {
			continue
		}
		si := SetInfo{Set: e.Name()}
		// An unreadable set must not look empty: the garbage collector
		// would drop its chunks.
		vs, err := os.ReadDir(filepath.Join(r.dir, "sets", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("list versions of %s: %w", e.Name(), err)
		}
		for _, v := range vs {
			if n, err := strconv.ParseUint(strings.TrimPrefix(v.Name(), "v"), 10, 64); err == nil && strings.HasPrefix(v.Name(), "v") {
				si.Versions = append(si.Versions, n)
			}
		}
		sort.Slice(si.Versions, func(i, j int) bool { return si.Versions[i] < si.Versions[j] })
		if si.Current, err = r.Current(e.Name()); err != nil {
			return nil, err
		}
		out = append(out, si)
	}
	return out, nil
}

// indexDigest is the BLAKE3 of an index's encoding.
func indexDigest(x *chunk.Index) (chunk.ID, []byte, error) {
	b, err := x.MarshalBinary()
	if err != nil {
		return chunk.ID{}, nil, err
	}
	return chunk.ID(blake3.Sum256(b)), b, nil
}

// commit makes version m of set current: its indexes and meta are written
// to a temporary directory, synced, renamed into place, and CURRENT is
// replaced. The chunks must already be durable.
func (r *Repo) commit(set string, m *Manifest, idx []*chunk.Index, meta []byte) error {
	setDir := filepath.Join(r.dir, "sets", set)
	if err := os.MkdirAll(setDir, 0o700); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Join(r.dir, "tmp"), set+"-")
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	defer os.RemoveAll(tmp)
	for i, x := range idx {
		if err := chunk.WriteIndexFile(filepath.Join(tmp, m.Images[i].Index), x); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	if err := atomicfile.WriteBytes(filepath.Join(tmp, "meta"), 0o600, meta); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(tmp, "manifest.json"), 0o600, mb); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	dst := filepath.Join(setDir, versionDir(m.Version))
	// A directory left by a push that died before CURRENT moved is stale.
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := atomicfile.SyncDir(setDir); err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(setDir, "CURRENT"), 0o600, []byte(versionDir(m.Version)+"\n"))
}

// materializeState records which version the image files hold. While
// Applying is set the files are being moved from Version to Applying, and
// redoing that move from the indexes and chunks is always safe.
type materializeState struct {
	Version  uint64 `json:"version"`
	Applying uint64 `json:"applying,omitempty"`
}

// Materialize brings the set's image files to version v: by rewriting only
// the entries that differ from the version the files hold (I/O in
// proportion to the change), or by writing them whole when no usable
// version is there.
func (r *Repo) Materialize(ctx context.Context, set string, v uint64) error {
	return r.materialize(ctx, set, v, nil)
}

func (r *Repo) statePath(set string) string {
	return filepath.Join(r.dir, "sets", set, "images", ".state.json")
}

func (r *Repo) readState(set string) materializeState {
	var st materializeState
	if b, err := r.readFile(path.Join("sets", set, "images", ".state.json"), maxStateFile); err == nil {
		if json.Unmarshal(b, &st) != nil {
			st = materializeState{}
		}
	}
	return st
}

func (r *Repo) writeState(set string, st materializeState) error {
	b, _ := json.Marshal(st)
	return atomicfile.WriteBytes(r.statePath(set), 0o600, b)
}

// materializedVersion is the version the set's image files hold, or were
// being moved from; 0 when there is none.
func (r *Repo) materializedVersion(set string) uint64 { return r.readState(set).Version }

// materialize is Materialize with the images staged while the push
// arrived put in place instead of written again.
func (r *Repo) materialize(ctx context.Context, set string, v uint64, stg *staging) error {
	dir := filepath.Join(r.dir, "sets", set, "images")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("materialize: %w", err)
	}
	st := r.readState(set)
	writeState := func(s materializeState) error { return r.writeState(set, s) }
	m, err := r.Manifest(set, v)
	if err != nil {
		return err
	}
	from := st.Version
	if from == v && st.Applying == 0 {
		return nil
	}
	if err := writeState(materializeState{Version: from, Applying: v}); err != nil {
		return err
	}
	for i, im := range m.Images {
		if sf := stg.staged(i); sf != nil {
			if err := sf.finish(ctx, r.store); err != nil {
				return fmt.Errorf("materialize %s/%s: %w", set, im.Name, err)
			}
			continue
		}
		next, err := r.Index(set, v, im.Name)
		if err != nil {
			return err
		}
		var prev *chunk.Index
		if from != 0 {
			// A missing base index or image file means a full write.
			prev, _ = r.Index(set, from, im.Name)
		}
		if err := r.materializeImage(ctx, filepath.Join(dir, im.Name), prev, next); err != nil {
			return fmt.Errorf("materialize %s/%s: %w", set, im.Name, err)
		}
	}
	return writeState(materializeState{Version: v})
}

func (r *Repo) materializeImage(ctx context.Context, path string, prev, next *chunk.Index) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil || prev == nil {
		if f != nil {
			f.Close()
		}
		return r.writeWhole(ctx, path, next)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || (fi.Size() != prev.Size && fi.Size() != next.Size) || inUse(f) {
		// A file another process holds locked (a QEMU running a resumed
		// copy on an overlay over it) is replaced, not rewritten: the
		// process keeps reading the previous version's file.
		f.Close()
		return r.writeWhole(ctx, path, next)
	}
	if err := f.Truncate(next.Size); err != nil {
		return err
	}
	w := &spanWriter{f: f}
	j := 0
	for _, e := range next.Entries {
		for j < len(prev.Entries) && prev.Entries[j].Offset < e.Offset {
			j++
		}
		if j < len(prev.Entries) && prev.Entries[j] == e {
			continue
		}
		if err := r.writeEntry(ctx, w, e); err != nil {
			return err
		}
	}
	if err := w.flush(); err != nil {
		return err
	}
	return f.Sync()
}

// inUse reports whether another process holds a lock on any part of f,
// as QEMU does on the images it opens (OFD locks, even read-only).
func inUse(f *os.File) bool {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// writeWhole writes the image to a temporary file and renames it over path.
func (r *Repo) writeWhole(ctx context.Context, path string, x *chunk.Index) error {
	return atomicfile.Write(path, 0o600, func(w io.Writer) error {
		f := w.(*os.File)
		if err := f.Truncate(x.Size); err != nil {
			return err
		}
		sw := &spanWriter{f: f}
		for _, e := range x.Entries {
			if e.Zero {
				continue
			}
			if err := r.writeEntry(ctx, sw, e); err != nil {
				return err
			}
		}
		return sw.flush()
	})
}

// spanWriter gathers writes at consecutive offsets into large ones.
type spanWriter struct {
	f   *os.File
	off int64
	buf []byte
}

func (w *spanWriter) WriteAt(p []byte, off int64) (int, error) {
	if len(w.buf) > 0 && (off != w.off+int64(len(w.buf)) || len(w.buf) >= 4<<20) {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	if len(w.buf) == 0 {
		w.off = off
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *spanWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.f.WriteAt(w.buf, w.off)
	w.buf = w.buf[:0]
	return err
}

func (r *Repo) writeEntry(ctx context.Context, f *spanWriter, e chunk.Entry) error {
	if e.Zero {
		if err := f.flush(); err != nil {
			return err
		}
		err := unix.Fallocate(int(f.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, e.Offset, e.Length)
		if err == nil {
			return nil
		}
		zeros := make([]byte, min(e.Length, 1<<20))
		for off := e.Offset; off < e.End(); off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), e.End()-off)], off); err != nil {
				return err
			}
		}
		return nil
	}
	data, err := r.store.Get(ctx, e.ID)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, e.Offset)
	return err
}
