package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	gosync "sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/internal/filelock"
	"github.com/ntc-project/ntc/repo"
)

// Repo is a view of repo.Repo for receiving pushes (see package repo's
// "one repository, three views"): the node repository whose versions it
// receives, with per-set push locks and the materialized images of each
// set's current version, or versions kept elsewhere (Versions).
//
//	DIR/packs/…                         the chunk store (chunk.PackStore)
//	DIR/sets/SET/versions/NNNNNN/       a committed version (package repo)
//	DIR/sets/SET/HEAD, lineage          the current version, the lineage
//	DIR/sets/SET/images/IMAGE           the current version's images as files
//	DIR/sets/SET/images/.state.json     which version the files hold
//	DIR/tmp/                            versions being assembled
//
// A version is committed (repo.Repo.Commit) after its chunks are durable;
// the previous version (its indexes and chunks) stays intact throughout.
// The repository is the node's: checkpoints taken here (package capture)
// are versions of it too. So the chunk store is open only while a push or
// a collection needs it, and a checkpoint waits for it meanwhile.
// A repository an older ntc wrote (DIR/sets/SET/v000042/manifest.json and
// CURRENT) is converted when it is opened, keeping its version numbers.
//
// A Repo may keep its versions and chunks elsewhere (OpenRepoOn: in an S3
// bucket, repo/s3repo); DIR is then a local cache that holds only the
// images materialised on demand (Materialize), not at each commit. A
// repository in a directory may do the same (ImagesOnDemand), so that it
// does not keep every image twice, in its packs and as files.
type Repo struct {
	dir   string
	nodes Versions
	local *repo.Repo // the node repository in dir; nil when nodes are elsewhere
	// onDemand: images are materialised when asked for, not at each
	// commit (a repository elsewhere: its receivers share it, and its
	// local disk is a cache).
	onDemand bool

	// store is open while users > 0 (pushes in progress, a collection).
	storeMu    gosync.Mutex
	store      chunk.WriteStore
	closeStore func() error
	users      int

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

// Manifest describes a committed version, as commands show it.
type Manifest struct {
	Set string `json:"set"`
	// Version is the version's number in this repository.
	Version uint64 `json:"version"`
	// Base is the number of its parent here, 0 when the parent is not held.
	Base    uint64          `json:"base"`
	Created time.Time       `json:"created"`
	Sender  string          `json:"sender,omitempty"`
	Digest  repo.Digest     `json:"digest"`
	Parent  repo.Digest     `json:"parent"`
	Node    string          `json:"node,omitempty"`
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

// OpenRepo opens, creating if needed, the repository in dir to receive
// versions. One process receives into a repository at a time; others may
// take checkpoints into it (package capture) and read it.
func OpenRepo(dir string) (*Repo, error) {
	nodes, err := repo.Open(dir)
	if err != nil {
		return nil, err
	}
	r := newDirRepo(dir, nodes)
	if err := r.convert(context.Background()); err != nil {
		return nil, err
	}
	return r, nil
}

func newDirRepo(dir string, nodes *repo.Repo) *Repo {
	r := &Repo{dir: dir, local: nodes, locks: map[string]*setLock{}}
	r.nodes = dirVersions{nodes: nodes}
	return r
}

// OpenRepoOn opens a repository whose versions and chunks v keeps (one in
// an S3 bucket: repo/s3repo), to receive versions into and to read them.
// cache is a local directory, created if needed, where images are
// materialised when asked for (Materialize); several processes may
// receive into the same v, each with its own cache.
func OpenRepoOn(cache string, v Versions) (*Repo, error) {
	for _, d := range []string{cache, filepath.Join(cache, "sets")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open repository cache: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("open repository cache: %w", err)
		}
	}
	return &Repo{dir: cache, nodes: v, onDemand: true, locks: map[string]*setLock{}}, nil
}

// OpenRepoForReading opens the repository in dir to list and read its
// versions and indexes, while another process may be serving it. A
// repository in the older layout is converted first.
func OpenRepoForReading(dir string) (*Repo, error) {
	nodes, err := repo.OpenExisting(dir)
	if err != nil {
		return nil, err // repo.ErrNotRepo
	}
	r := newDirRepo(dir, nodes)
	if err := r.convert(context.Background()); err != nil {
		return nil, err
	}
	return r, nil
}

// ImagesOnDemand makes the repository's commits write no image files:
// whoever runs from them (a resume, a hand-off) materialises the version
// it needs first (Materialize), from the version the files hold. Readers
// need not know the mode: they materialise whenever images/.state.json
// does not name their version, which in the default mode it already does.
// Call it before receiving.
func (r *Repo) ImagesOnDemand() { r.onDemand = true }

// Close releases the repository's chunk store, if a push left it open.
func (r *Repo) Close() error {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	if r.store == nil {
		return nil
	}
	err := r.closeStore()
	r.store, r.closeStore, r.users = nil, nil, 0
	return err
}

// Store returns the repository's pack store while a push or a collection
// has it open, nil otherwise, and nil for a repository kept elsewhere.
func (r *Repo) Store() *chunk.PackStore {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	ps, _ := r.store.(*chunk.PackStore)
	return ps
}

// holdStore opens the chunk store for writing, or keeps it open, until
// release: while another process has it (a checkpoint being taken here),
// it waits, until ctx ends.
func (r *Repo) holdStore(ctx context.Context) (release func(), err error) {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	if r.users == 0 {
		if r.store, r.closeStore, err = r.nodes.OpenStore(ctx); err != nil {
			return nil, fmt.Errorf("open the chunk store: %w", err)
		}
	}
	r.users++
	var once gosync.Once
	return func() {
		once.Do(func() {
			r.storeMu.Lock()
			defer r.storeMu.Unlock()
			if r.users--; r.users == 0 {
				r.closeStore()
				r.store, r.closeStore = nil, nil
			}
		})
	}, nil
}

// Dir returns the repository's directory.
func (r *Repo) Dir() string { return r.dir }

// Nodes returns the node repository that holds the versions, nil when
// they are kept elsewhere (OpenRepoOn).
func (r *Repo) Nodes() *repo.Repo { return r.local }

// Versions returns where the versions are kept.
func (r *Repo) Versions() Versions { return r.nodes }

// readCtx is the context of the reading methods (Current, Manifest,
// Index, Meta, List) that take none: they predate repositories kept
// elsewhere, whose reads are requests.
func readCtx() context.Context { return context.TODO() }

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

// Current returns the manifest of the set's current version, or nil when
// the set has none.
func (r *Repo) Current(set string) (*Manifest, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	h, err := r.nodes.Head(readCtx(), set)
	if err != nil || h == nil {
		return nil, err
	}
	return r.manifestOf(h, nil)
}

// Manifest reads a committed version's manifest.
func (r *Repo) Manifest(set string, v uint64) (*Manifest, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	rv, err := r.nodes.Version(readCtx(), set, v)
	if err != nil {
		return nil, err
	}
	return r.manifestOf(rv, nil)
}

// manifestOf describes v; seqOf, if given, maps digests to numbers here
// (else the parent is looked up).
func (r *Repo) manifestOf(v *repo.Version, seqOf map[repo.Digest]uint64) (*Manifest, error) {
	m := &Manifest{Set: v.Set, Version: v.Seq, Created: v.Created, Sender: v.From, Digest: v.Digest, Parent: v.Parent, Node: v.Node}
	if m.Sender == "" {
		m.Sender = v.Node
	}
	if !v.Parent.IsZero() {
		if seqOf != nil {
			m.Base = seqOf[v.Parent]
		} else if p, err := r.nodes.ByDigest(readCtx(), v.Set, v.Parent); err == nil {
			m.Base = p.Seq
		}
	}
	for _, im := range v.Images {
		params := ""
		if x, err := r.Index(v.Set, v.Seq, im.Name); err == nil {
			params = x.Params.String()
		}
		m.Images = append(m.Images, ImageManifest{Name: im.Name, Size: im.Size, Index: im.Name + ".idx",
			Digest: chunk.ID(im.Index), Params: params, Chunks: im.Chunks})
	}
	return m, nil
}

// Index reads the index of one image of a committed version.
func (r *Repo) Index(set string, v uint64, image string) (*chunk.Index, error) {
	if err := CheckName(image); err != nil {
		return nil, err
	}
	if err := CheckName(set); err != nil {
		return nil, err
	}
	return r.nodes.Index(readCtx(), set, v, image)
}

// Meta returns the metadata the sender attached to a version.
func (r *Repo) Meta(set string, v uint64) ([]byte, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	return r.nodes.Meta(readCtx(), set, v)
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
	// Diverged lists the numbers of versions that ran apart from the
	// current one (see repo.Repo.Diverged).
	Diverged []uint64 `json:"diverged,omitempty"`
}

// List returns every set with its committed versions.
func (r *Repo) List() ([]SetInfo, error) {
	ctx := readCtx()
	sets, err := r.nodes.Sets(ctx)
	if err != nil {
		return nil, err
	}
	var out []SetInfo
	for _, set := range sets {
		// An unreadable set must not look empty: the garbage collector
		// would drop its chunks.
		vs, err := r.nodes.Versions(ctx, set)
		if err != nil {
			return nil, fmt.Errorf("list versions of %s: %w", set, err)
		}
		si := SetInfo{Set: set}
		seqOf := map[repo.Digest]uint64{}
		for _, v := range vs {
			si.Versions = append(si.Versions, v.Seq)
			seqOf[v.Digest] = v.Seq
		}
		h, err := r.nodes.Head(ctx, set)
		if err != nil {
			return nil, err
		}
		if h != nil {
			if si.Current, err = r.manifestOf(h, seqOf); err != nil {
				return nil, err
			}
		}
		div, err := r.nodes.Diverged(ctx, set)
		if err != nil {
			return nil, err
		}
		for _, v := range div {
			si.Diverged = append(si.Diverged, v.Seq)
		}
		out = append(out, si)
	}
	return out, nil
}

// indexDigest is the BLAKE3 of an index's encoding.
func indexDigest(x *chunk.Index) (chunk.ID, []byte, error) {
	d, b, err := repo.IndexDigest(x)
	return chunk.ID(d), b, err
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
// version is there. Materialisers of a set take turns (images/.lock, across
// processes: two resumes, a resume and serve's commit or hand-off), and
// one that finds the files at v already does nothing. A repository in a
// directory is read through a read-only chunk store, beside a serve that
// pushes into it; an image file a running copy holds (QEMU's locks) is
// replaced, never rewritten under it.
func (r *Repo) Materialize(ctx context.Context, set string, v uint64) error {
	if err := CheckName(set); err != nil {
		return err
	}
	unlock, err := r.lockImages(ctx, set)
	if err != nil {
		return err
	}
	defer unlock()
	if st := r.readState(set); st.Version == v && st.Applying == 0 {
		return nil
	}
	if r.local != nil {
		st, err := r.local.OpenStoreReadOnly()
		if err != nil {
			return fmt.Errorf("materialize %s: %w", set, err)
		}
		defer st.Close()
		return r.materializeNow(ctx, set, v, st, nil)
	}
	release, err := r.holdStore(ctx)
	if err != nil {
		return err
	}
	defer release()
	return r.materializeNow(ctx, set, v, r.heldStore(), nil)
}

// heldStore is the chunk store holdStore opened.
func (r *Repo) heldStore() chunk.WriteStore {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	return r.store
}

// lockImages takes the set's images lock (flock of images/.lock), waiting
// while another materialiser holds it, until ctx ends.
func (r *Repo) lockImages(ctx context.Context, set string) (unlock func(), err error) {
	dir := filepath.Join(r.dir, "sets", set, "images")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	unlock, err = filelock.Lock(ctx, filepath.Join(dir, ".lock"), "another process materialising "+set)
	if err != nil {
		return nil, fmt.Errorf("lock the images of %s: %w", set, err)
	}
	// Only materialisers write temporary files here (atomicfile's), so
	// any now are those of one that was killed.
	left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	for _, p := range left {
		os.Remove(p)
	}
	return unlock, nil
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

// ImagesHold reports whether the set's image files hold version v, with
// no move under way: whether ImagePath names v's images. A repository
// whose images are written on demand holds them only once Materialize
// wrote them.
func (r *Repo) ImagesHold(set string, v uint64) bool {
	return CheckName(set) == nil && r.readState(set) == materializeState{Version: v}
}

// materializedVersion is the version the set's image files hold, or were
// being moved from; 0 when there is none.
func (r *Repo) materializedVersion(set string) uint64 { return r.readState(set).Version }

// materialize is Materialize with the images staged while the push
// arrived put in place instead of written again. A repository whose
// images are materialised on demand writes none at a commit.
func (r *Repo) materialize(ctx context.Context, set string, v uint64, stg *staging) error {
	if r.onDemand && stg == nil {
		return nil
	}
	unlock, err := r.lockImages(ctx, set)
	if err != nil {
		return err
	}
	defer unlock()
	return r.materializeNow(ctx, set, v, r.heldStore(), stg)
}

// materializeNow moves the image files to v, reading chunks from store;
// the caller holds the images lock.
func (r *Repo) materializeNow(ctx context.Context, set string, v uint64, store chunk.Store, stg *staging) error {
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
	if st.Applying != 0 && st.Applying != v {
		// Interrupted on the way to another version: the files are a mix
		// of two versions, and no index describes them.
		from = 0
	}
	if err := writeState(materializeState{Version: from, Applying: v}); err != nil {
		return err
	}
	for i, im := range m.Images {
		if sf := stg.staged(i); sf != nil {
			if err := sf.finish(ctx, store); err != nil {
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
		if p, ok := store.(prefetcher); ok && prev == nil {
			// A whole image from a bucket: in a few large requests.
			if err := p.Prefetch(ctx, chunk.IDs(next)); err != nil {
				return fmt.Errorf("materialize %s/%s: %w", set, im.Name, err)
			}
		}
		if err := materializeImage(ctx, store, filepath.Join(dir, im.Name), prev, next); err != nil {
			return fmt.Errorf("materialize %s/%s: %w", set, im.Name, err)
		}
	}
	return writeState(materializeState{Version: v})
}

// prefetcher is a store that fetches many chunks in a few requests (a
// bucket's, into its local cache).
type prefetcher interface {
	Prefetch(ctx context.Context, ids []chunk.ID) error
}

func materializeImage(ctx context.Context, store chunk.Store, path string, prev, next *chunk.Index) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil || prev == nil {
		if f != nil {
			f.Close()
		}
		return writeWhole(ctx, store, path, next)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || (fi.Size() != prev.Size && fi.Size() != next.Size) || inUse(f) {
		// A file another process holds locked (a QEMU running a resumed
		// copy on an overlay over it) is replaced, not rewritten: the
		// process keeps reading the previous version's file.
		f.Close()
		return writeWhole(ctx, store, path, next)
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
		if err := writeEntry(ctx, store, w, e); err != nil {
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
func writeWhole(ctx context.Context, store chunk.Store, path string, x *chunk.Index) error {
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
			if err := writeEntry(ctx, store, sw, e); err != nil {
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

func writeEntry(ctx context.Context, store chunk.Store, f *spanWriter, e chunk.Entry) error {
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
	data, err := store.Get(ctx, e.ID)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, e.Offset)
	return err
}
