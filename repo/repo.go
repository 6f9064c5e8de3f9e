package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/internal/filelock"
	"github.com/ntc-project/ntc/internal/safefile"
)

// Repo is a node's repository in a directory (see the package doc):
// capture.Repository and sync.Repo are views of it. Any number of
// processes may read it; writing operations (Commit, SetHead,
// SetRunner) take DIR/lock for their duration, so several processes (a
// receiver and a checkpointing one) can commit to one repository.
type Repo struct {
	dir string
}

// File and directory names.
const (
	setsDir     = "sets"
	versionsDir = "versions"
	tmpDir      = "tmp"
	lockFile    = "lock"
	headFile    = "HEAD"
	lineageFile = "lineage"
	runnerFile  = "runner.json"
	versionFile = "version.json"
	metaFile    = "meta"
	indexSuffix = ".idx"
)

// Modes of what a repository holds: guest data is private.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// Sentinel errors.
var (
	// ErrDiverged: the set's head is not an ancestor of the version
	// committed; the version is kept beside it, not made current.
	ErrDiverged = errors.New("the copies have diverged")
	// ErrNotFound: no such version.
	ErrNotFound = errors.New("version not found")
	// ErrNotRepo: the directory is not a repository.
	ErrNotRepo = errors.New("not an ntc repository")
)

// Open opens, creating if needed, the repository in dir: DIR/sets and
// DIR/tmp are made private (0700, also in a directory an older ntc made),
// and what DIR/tmp holds from before (versions being assembled or removed
// when a process died) is removed. Every layer over a repository opens
// it here (package capture to take checkpoints, package sync to receive).
func Open(dir string) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil || dir == "" {
		return nil, fmt.Errorf("open repository %q: %v: %w", dir, err, ErrNotRepo)
	}
	for _, d := range []string{setsDir, tmpDir} {
		p := filepath.Join(abs, d)
		if err := os.MkdirAll(p, dirMode); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
		if err := os.Chmod(p, dirMode); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
	}
	r := &Repo{dir: abs}
	r.removeStaleTmp()
	return r, nil
}

// staleTmp is the age past which an entry of DIR/tmp is left over: what
// a live process puts there (a commit's version being assembled) lives
// for milliseconds.
const staleTmp = 10 * time.Minute

// removeStaleTmp removes the entries of DIR/tmp older than staleTmp.
// Failing only leaves them.
func (r *Repo) removeStaleTmp() {
	ents, err := os.ReadDir(filepath.Join(r.dir, tmpDir))
	if err != nil {
		return
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTmp {
			os.RemoveAll(filepath.Join(r.dir, tmpDir, e.Name()))
		}
	}
}

// OpenExisting opens the repository in dir, which must be one (hold
// DIR/sets): ErrNotRepo otherwise. It creates and removes nothing, so a
// reader may open a repository another process writes.
func OpenExisting(dir string) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil || dir == "" {
		return nil, fmt.Errorf("open repository %q: %v: %w", dir, err, ErrNotRepo)
	}
	if fi, err := os.Stat(filepath.Join(abs, setsDir)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("open repository %s: %w", dir, ErrNotRepo)
	}
	return &Repo{dir: abs}, nil
}

// Dir returns the repository's directory (absolute).
func (r *Repo) Dir() string { return r.dir }

// OpenStore opens the repository's chunk store for writing, waiting while
// another process has it open (chunk.ErrStoreBusy) until ctx ends.
func (r *Repo) OpenStore(ctx context.Context) (*chunk.PackStore, error) {
	return filelock.Wait(ctx, func() (*chunk.PackStore, error) { return chunk.OpenPackStore(r.dir) })
}

// OpenStoreReadOnly opens the repository's chunk store to read, beside
// its writers: it sees the chunks stored when it was opened.
func (r *Repo) OpenStoreReadOnly() (*chunk.ReadOnlyPackStore, error) {
	return chunk.OpenPackStoreReadOnly(r.dir)
}

// lock takes DIR/lock for one writing operation, waiting while another
// process holds it until ctx ends.
func (r *Repo) lock(ctx context.Context) (unlock func(), err error) {
	f, err := filelock.Wait(ctx, func() (*os.File, error) { return filelock.TryLock(filepath.Join(r.dir, lockFile)) })
	if err != nil {
		return nil, fmt.Errorf("lock repository %s: %w", r.dir, err)
	}
	return func() { f.Close() }, nil
}

// Paths relative to the repository's directory (what read takes), and
// the directories themselves.
func setRel(set string) string { return filepath.Join(setsDir, set) }
func versionRel(set string, seq uint64) string {
	return filepath.Join(setsDir, set, versionsDir, seqName(seq))
}
func seqName(seq uint64) string          { return fmt.Sprintf("%06d", seq) }
func (r *Repo) setDir(set string) string { return filepath.Join(r.dir, setRel(set)) }
func (r *Repo) versionDir(set string, seq uint64) string {
	return filepath.Join(r.dir, versionRel(set, seq))
}

// Sets returns the names of the sets the repository holds, sorted.
func (r *Repo) Sets() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(r.dir, setsDir))
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && CheckName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Seqs returns the numbers of the set's committed versions, in order. A
// directory it cannot read is an error, never an empty set: a collector
// would drop the chunks of what it did not see.
func (r *Repo) Seqs(set string) ([]uint64, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(r.setDir(set), versionsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", set, err)
	}
	var out []uint64
	for _, e := range ents {
		n, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || n == 0 || !e.IsDir() || e.Name() != seqName(n) {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// NextSeq is the number the set's next version gets (without
// CommitOptions.Seq): one above the highest it holds, 1 for none.
func (r *Repo) NextSeq(set string) (uint64, error) {
	seqs, err := r.Seqs(set)
	if err != nil || len(seqs) == 0 {
		return 1, err
	}
	return seqs[len(seqs)-1] + 1, nil
}

// maxVersionFile bounds version.json: a version lists at most maxImages
// images of a few hundred bytes each.
const maxVersionFile = 4 << 20

// Version reads version seq of set.
func (r *Repo) Version(set string, seq uint64) (*Version, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	p := filepath.Join(versionRel(set, seq), versionFile)
	b, err := r.read(p, maxVersionFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("version %d of %s: %w", seq, set, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	p = filepath.Join(r.dir, p)
	var v Version
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if v.Set != set || v.Seq != seq {
		return nil, fmt.Errorf("%s: says version %d of %s: %w", p, v.Seq, v.Set, ErrBadVersion)
	}
	if err := v.Verify(); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &v, nil
}

// read reads the repository's file at rel (relative to its directory), a
// regular file of at most limit bytes, never through a link or out of the
// directory (safefile).
func (r *Repo) read(rel string, limit int64) ([]byte, error) {
	return safefile.ReadIn(r.dir, rel, limit)
}

// Versions returns the set's versions, oldest first.
func (r *Repo) Versions(set string) ([]*Version, error) {
	seqs, err := r.Seqs(set)
	if err != nil {
		return nil, err
	}
	out := make([]*Version, 0, len(seqs))
	for _, s := range seqs {
		v, err := r.Version(set, s)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// ByDigest returns the set's version with digest d.
func (r *Repo) ByDigest(set string, d Digest) (*Version, error) {
	vs, err := r.Versions(set)
	if err != nil {
		return nil, err
	}
	for _, v := range slices.Backward(vs) {
		if v.Digest == d {
			return v, nil
		}
	}
	return nil, fmt.Errorf("version %s of %s: %w", d.Short(), set, ErrNotFound)
}

// Head returns the set's current version, or nil when it has none.
func (r *Repo) Head(set string) (*Version, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	b, err := r.read(filepath.Join(setRel(set), headFile), 64)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the head of %s: %w", set, err)
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("set %s: HEAD holds %q, want a version number", set, b)
	}
	return r.Version(set, seq)
}

// Index reads the index of image name of version seq of set.
func (r *Repo) Index(set string, seq uint64, name string) (*chunk.Index, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	return r.ReadIndexFile(filepath.Join(versionRel(set, seq), name+indexSuffix))
}

// ReadIndexFile reads the index file at rel, relative to the repository's
// directory, as Index does: bounded, never through a link. For a layer
// that finds indexes beside the versions (an older layout it converts).
func (r *Repo) ReadIndexFile(rel string) (*chunk.Index, error) {
	f, err := safefile.OpenIn(r.dir, rel, maxIndexFile)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	defer f.Close()
	x, err := chunk.DecodeIndex(f)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", f.Name(), err)
	}
	return x, nil
}

// maxIndexFile bounds an index file: 1<<24 entries (a receiver's default
// bound, 64 GiB of 4 KiB chunks), each at most a 10-byte length and an ID.
const maxIndexFile = 64 + (1<<24)*42 + 32

// MaxMeta bounds a version's metadata (a checkpoint's manifest, what a
// sender attaches): Commit refuses more, Meta reads no more.
const MaxMeta = 1 << 20

// Meta returns version seq's metadata (nil when it has none).
func (r *Repo) Meta(set string, seq uint64) ([]byte, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	b, err := r.read(filepath.Join(versionRel(set, seq), metaFile), MaxMeta)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// CommitOptions change how Commit treats the head.
type CommitOptions struct {
	// Force makes the version the head even when the head is not its
	// ancestor (the user chose it over the other copy's).
	Force bool
	// Lineage adds parent links the version's maker knows (its ancestry
	// back to the version both nodes hold) before ancestry is decided.
	Lineage []Link
	// Seq, if not 0, is the number the version gets instead of the next
	// one; it must be above every number the set has (a conversion from
	// an older layout keeps its numbers).
	Seq uint64
}

// Link is one parent link of a set's lineage.
type Link struct {
	Digest, Parent Digest
}

// Committed says what Commit did.
type Committed struct {
	Version *Version
	// Head is the set's head after the commit.
	Head *Version
	// Existed is set when the repository already held the version.
	Existed bool
}

// Commit stores version v of its set, with one index per image (in the
// order of v.Images) and its metadata. v must be sealed (Seal) and its
// chunks durable in the store. v gets the next local number. The head moves
// to v when the set has none, when the head is an ancestor of v, or with
// Force; otherwise v is kept and the error is ErrDiverged (with Committed
// filled in). Committing a version the set already holds changes nothing
// but may move the head to it (a fast-forward, or Force).
func (r *Repo) Commit(ctx context.Context, v *Version, idx []*chunk.Index, meta []byte, opt CommitOptions) (*Committed, error) {
	if err := v.Matches(idx, meta); err != nil {
		return nil, err
	}
	unlock, err := r.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()

	if err := r.addLinks(v.Set, append(slices.Clone(opt.Lineage), Link{Digest: v.Digest, Parent: v.Parent})); err != nil {
		return nil, err
	}
	c := &Committed{}
	if old, err := r.ByDigest(v.Set, v.Digest); err == nil {
		c.Version, c.Existed = old, true
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	} else if c.Version, err = r.writeVersion(v, idx, meta, opt.Seq); err != nil {
		return nil, err
	}
	head, err := r.Head(v.Set)
	if err != nil {
		return nil, err
	}
	if head != nil && head.Digest == c.Version.Digest {
		c.Head = head
		return c, nil
	}
	ff := head == nil
	if !ff {
		if ff, err = r.isAncestor(v.Set, head.Digest, v.Digest); err != nil {
			return nil, err
		}
	}
	if !ff && !opt.Force {
		c.Head = head
		return c, fmt.Errorf("set %s: version %s (from %s) does not follow the current version %s (from %s): %w",
			v.Set, v.Digest.Short(), nodeName(v.Node), head.Digest.Short(), nodeName(head.Node), ErrDiverged)
	}
	if err := r.writeHead(v.Set, c.Version.Seq); err != nil {
		return nil, err
	}
	c.Head = c.Version
	return c, nil
}

func nodeName(n string) string {
	if n == "" {
		return "an unknown node"
	}
	if len(n) > 16 {
		return n[:16]
	}
	return n
}

// writeVersion writes v as the set's next version and returns it numbered.
func (r *Repo) writeVersion(v *Version, idx []*chunk.Index, meta []byte, seq uint64) (*Version, error) {
	next, err := r.NextSeq(v.Set)
	if err != nil {
		return nil, err
	}
	nv := *v
	nv.Images = slices.Clone(v.Images)
	nv.Seq = next
	if seq != 0 {
		if seq < nv.Seq {
			return nil, fmt.Errorf("commit %s as version %d: the set has version %d already: %w", v.Set, seq, nv.Seq-1, ErrBadVersion)
		}
		nv.Seq = seq
	}
	vdir := filepath.Join(r.setDir(v.Set), versionsDir)
	if err := os.MkdirAll(vdir, dirMode); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Join(r.dir, tmpDir), v.Set+"-")
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	defer os.RemoveAll(tmp)
	// The version's files go into a directory no reader sees until it is
	// renamed into place: each file is synced, the directory once.
	for i, x := range idx {
		err := atomicfile.WriteNew(filepath.Join(tmp, v.Images[i].Name+indexSuffix), fileMode, func(w io.Writer) error {
			_, err := x.WriteTo(w)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
	}
	b, err := json.MarshalIndent(&nv, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{versionFile: append(b, '\n')}
	if len(meta) > 0 {
		files[metaFile] = meta
	}
	for name, data := range files {
		err := atomicfile.WriteNew(filepath.Join(tmp, name), fileMode, func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("commit: %w", err)
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	dst := r.versionDir(v.Set, nv.Seq)
	if err := os.Rename(tmp, dst); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if err := atomicfile.SyncDir(vdir); err != nil {
		return nil, err
	}
	return &nv, nil
}

func (r *Repo) writeHead(set string, seq uint64) error {
	return atomicfile.WriteBytes(filepath.Join(r.setDir(set), headFile), fileMode, []byte(strconv.FormatUint(seq, 10)+"\n"))
}

// SetHead makes version seq the set's head, whatever the lineage says: the
// user's choice after a divergence.
func (r *Repo) SetHead(ctx context.Context, set string, seq uint64) error {
	unlock, err := r.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := r.Version(set, seq); err != nil {
		return err
	}
	return r.writeHead(set, seq)
}

// Remove removes version seq of set. The head cannot be removed. The
// version's directory is first renamed into DIR/tmp, so a crash never
// leaves a half-removed version among the committed ones; its lineage
// links stay.
func (r *Repo) Remove(ctx context.Context, set string, seq uint64) error {
	unlock, err := r.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	head, err := r.Head(set)
	if err != nil {
		return err
	}
	if head != nil && head.Seq == seq {
		return fmt.Errorf("remove version %d of %s: it is the current version", seq, set)
	}
	src := r.versionDir(set, seq)
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("remove version %d of %s: %w", seq, set, ErrNotFound)
	}
	tmp, err := os.MkdirTemp(filepath.Join(r.dir, tmpDir), "removed-")
	if err != nil {
		return fmt.Errorf("remove version %d of %s: %w", seq, set, err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Rename(src, filepath.Join(tmp, seqName(seq))); err != nil {
		return fmt.Errorf("remove version %d of %s: %w", seq, set, err)
	}
	return atomicfile.SyncDir(filepath.Join(r.setDir(set), versionsDir))
}

func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}
