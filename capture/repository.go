package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/filelock"
	"github.com/ntc-project/ntc/repo"
)

// Repository is a view of repo.Repo for taking and reading checkpoints:
// one set of the node repository seen as a series of checkpoints (see
// package repo's "one repository, three views"). Every version of the set
// is a checkpoint, its metadata the checkpoint's Manifest, one index per
// image (disks, RAM blocks, device state, stream description), its chunks
// in the node's store. What this node captured and what it received from
// a peer are versions of the same kind, so a copy resumed here continues
// the series.
//
//	DIR/packs/                                  the node's chunk store
//	DIR/sets/SET/versions/NNNNNN/               one checkpoint (package repo)
//	DIR/sets/SET/capture/state.json             capture's bookkeeping: the overlay chains
//	DIR/sets/SET/capture/changes/DIGEST/NAME    the extents a disk's writes covered since the parent
//	DIR/sets/SET/capture/lock                   held (flock) while a checkpoint of SET is taken
//
// A checkpoint is committed (repo.Repo.Commit) once its chunks are
// durable: readers never see a part of one. One process takes checkpoints
// of a set at a time (OpenRepository); any number may read
// (OpenRepositoryForReading), even while one is taken.
type Repository struct {
	nodes  *repo.Repo
	set    string
	store  repoStore
	packs  *chunk.PackStore // nil when open for reading
	unlock func()
}

// repoStore is what a repository needs of its chunk store.
type repoStore interface {
	chunk.Store
	Close() error
}

// DefaultSet is the set a checkpoint goes to when none is named.
const DefaultSet = "vm"

// File and directory names of capture's part of a set.
const (
	captureDir = "capture"
	stateFile  = "state.json"
	lockFile   = "lock"
	changesDir = "changes"
)

// OpenRepository opens, creating if needed, the node repository in dir to
// take checkpoints of set: it takes the set's capture lock (ErrBusy when
// another process holds it) and the node's chunk store, waiting while
// another process (a receiver's push) writes it, until ctx ends. Close
// releases both.
func OpenRepository(ctx context.Context, dir, set string) (*Repository, error) {
	if err := CheckName(set); err != nil {
		return nil, fmt.Errorf("open repository %s: set name: %w", dir, err)
	}
	if err := refuseOldLayout(dir); err != nil {
		return nil, err
	}
	nodes, err := repo.Open(dir)
	if err != nil {
		return nil, err
	}
	r := &Repository{nodes: nodes, set: set}
	if err := os.MkdirAll(r.captureDir(), 0o700); err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	if r.unlock, err = r.lock(); err != nil {
		return nil, err
	}
	if r.packs, err = nodes.OpenStore(ctx); err != nil {
		r.unlock()
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	r.store = r.packs
	return r, nil
}

// OpenRepositoryForReading opens set of the node repository in dir to read
// its checkpoints, while other processes may write it. It sees the chunks
// stored when it was opened, which include those of every committed
// checkpoint.
func OpenRepositoryForReading(dir, set string) (*Repository, error) {
	if err := CheckName(set); err != nil {
		return nil, fmt.Errorf("open repository %s: set name: %w", dir, err)
	}
	if err := refuseOldLayout(dir); err != nil {
		return nil, err
	}
	nodes, err := repo.OpenExisting(dir)
	if err != nil {
		return nil, err // repo.ErrNotRepo
	}
	st, err := nodes.OpenStoreReadOnly()
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	return &Repository{nodes: nodes, set: set, store: st}, nil
}

// refuseOldLayout refuses a checkpoint repository of an older ntc
// (DIR/checkpoints and DIR/store), which kept one VM's checkpoints apart
// from everything else.
func refuseOldLayout(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "checkpoints")); err == nil {
		return fmt.Errorf("%s: %w (one VM, its own store)", dir, ErrOldRepository)
	}
	return nil
}

// Close releases the repository: it makes what was stored durable, closes
// the store and, when open for writing, unlocks the set.
func (r *Repository) Close() error {
	err := r.store.Close()
	if r.unlock != nil {
		r.unlock()
		r.unlock = nil
	}
	if err != nil {
		return fmt.Errorf("close repository %s: %w", r.nodes.Dir(), err)
	}
	return nil
}

// Dir returns the node repository's directory (absolute).
func (r *Repository) Dir() string { return r.nodes.Dir() }

// Set returns the set whose checkpoints the repository reads or writes.
func (r *Repository) Set() string { return r.set }

// Nodes returns the node repository.
func (r *Repository) Nodes() *repo.Repo { return r.nodes }

// Store returns the chunk store.
func (r *Repository) Store() chunk.Store { return r.store }

func (r *Repository) captureDir() string {
	return filepath.Join(r.nodes.Dir(), "sets", r.set, captureDir)
}

// sync makes every chunk stored so far durable.
func (r *Repository) sync(ctx context.Context) error {
	if r.packs == nil {
		return fmt.Errorf("repository %s: %w", r.Dir(), chunk.ErrReadOnly)
	}
	return r.packs.Sync(ctx)
}

// Checkpoints returns the numbers of the set's checkpoints, in order.
func (r *Repository) Checkpoints() ([]int, error) {
	seqs, err := r.nodes.Seqs(r.set)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(seqs))
	for i, s := range seqs {
		out[i] = int(s)
	}
	return out, nil
}

// Latest returns the manifest of the set's current checkpoint (its head),
// or nil when the set has none.
func (r *Repository) Latest() (*Manifest, error) {
	v, err := r.nodes.Head(r.set)
	if err != nil || v == nil {
		return nil, err
	}
	return r.manifestOf(v)
}

// Version returns checkpoint seq as the node repository holds it.
func (r *Repository) Version(seq int) (*repo.Version, error) {
	return r.nodes.Version(r.set, uint64(seq))
}

// Manifest reads checkpoint seq's manifest. Its Seq and Parent are this
// repository's numbers of the version and of its parent (0 when the parent
// is not held here), whichever node took the checkpoint.
func (r *Repository) Manifest(seq int) (*Manifest, error) {
	v, err := r.Version(seq)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %d: %w", seq, err)
	}
	return r.manifestOf(v)
}

func (r *Repository) manifestOf(v *repo.Version) (*Manifest, error) {
	b, err := r.nodes.Meta(r.set, v.Seq)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %d of %s: %w", v.Seq, r.set, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("version %d of %s holds no checkpoint manifest (pushed as plain images?)", v.Seq, r.set)
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %d of %s: %w", v.Seq, r.set, err)
	}
	m.Seq, m.Parent = int(v.Seq), 0
	if !v.Parent.IsZero() {
		if p, err := r.nodes.ByDigest(r.set, v.Parent); err == nil {
			m.Parent = int(p.Seq)
		}
	}
	return m, nil
}

// Index reads an index (a name from a manifest, "disk-vda.idx") of
// checkpoint seq.
func (r *Repository) Index(seq int, name string) (*chunk.Index, error) {
	if err := checkIndexName("checkpoint "+fmt.Sprint(seq), name); err != nil {
		return nil, err
	}
	return r.nodes.Index(r.set, uint64(seq), strings.TrimSuffix(name, manifestSuffix))
}

// Image returns a reader of the image an index of checkpoint seq
// describes, from the store. ctx bounds its reads.
func (r *Repository) Image(ctx context.Context, seq int, index string) (*chunk.StoreImage, error) {
	x, err := r.Index(seq, index)
	if err != nil {
		return nil, err
	}
	return chunk.NewStoreImage(ctx, x, r.store), nil
}

// readBlob reads a whole CDC-indexed blob from the store.
func (r *Repository) readBlob(ctx context.Context, seq int, ref ImageRef) ([]byte, error) {
	img, err := r.Image(ctx, seq, ref.Index)
	if err != nil {
		return nil, err
	}
	if img.Size() != ref.Size {
		return nil, fmt.Errorf("checkpoint %d: %s holds %d bytes, the manifest says %d", seq, ref.Index, img.Size(), ref.Size)
	}
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("checkpoint %d: read %s: %w", seq, ref.Index, err)
	}
	return b, nil
}

// Stream returns the migration stream of checkpoint m as migstream.Join
// takes it: the description with the device state, and the RAM page images
// read from the store. migstream.Join(ctx, w, s, src) writes a stream that
// `qemu -incoming` accepts.
func (r *Repository) Stream(ctx context.Context, m *Manifest) (*migstream.Stream, migstream.Source, error) {
	if m.Stream.Format != StreamFormat {
		return nil, nil, fmt.Errorf("checkpoint %d: stream format %q, this ntc reads %q", m.Seq, m.Stream.Format, StreamFormat)
	}
	meta, err := r.readBlob(ctx, m.Seq, ImageRef{Index: m.Stream.Index, Size: m.Stream.Size})
	if err != nil {
		return nil, nil, err
	}
	s, err := decodeStreamMeta(meta)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %d: %w", m.Seq, err)
	}
	if s.Devices, err = r.readBlob(ctx, m.Seq, m.DeviceState); err != nil {
		return nil, nil, err
	}
	src := storeSource{}
	for _, b := range m.RAM {
		img, err := r.Image(ctx, m.Seq, b.Index)
		if err != nil {
			return nil, nil, err
		}
		src[b.Name] = img
	}
	return s, src, nil
}

// nextSeq is the number the set's next checkpoint gets.
func (r *Repository) nextSeq() (int, error) {
	seq, err := r.nodes.NextSeq(r.set)
	return int(seq), err
}

// commit records checkpoint m, whose chunks are durable, as version m.Seq
// of the set: idx holds its indexes by manifest name, changes the extents
// each incremental disk's writes covered (by Disk.Changes), parent the
// digest of the version it continues (zero for none), node the node that
// took it.
func (r *Repository) commit(ctx context.Context, m *Manifest, idx map[string]*chunk.Index, changes map[string][]chunk.Range, parent repo.Digest, node string) (*repo.Version, error) {
	meta, err := EncodeManifest(m)
	if err != nil {
		return nil, err
	}
	v := &repo.Version{Set: r.set, Parent: parent, Node: node, Created: m.Created}
	var xs []*chunk.Index
	for _, name := range m.indexNames() {
		x := idx[name]
		if x == nil {
			return nil, fmt.Errorf("checkpoint %d: no index %s", m.Seq, name)
		}
		v.Images = append(v.Images, repo.Image{Name: strings.TrimSuffix(name, manifestSuffix)})
		xs = append(xs, x)
	}
	if err := v.Seal(xs, meta); err != nil {
		return nil, err
	}
	if len(changes) > 0 {
		dir := r.changesDir(v.Digest)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("record the disks' changes: %w", err)
		}
		for name, rs := range changes {
			if err := writeChanges(filepath.Join(dir, name), rs); err != nil {
				return nil, err
			}
		}
	}
	c, err := r.nodes.Commit(ctx, v, xs, meta, repo.CommitOptions{Seq: uint64(m.Seq)})
	if err != nil {
		return nil, err
	}
	return c.Version, nil
}

// indexNames lists the manifest's indexes in image order: disks, RAM
// blocks, device state, stream description.
func (m *Manifest) indexNames() []string {
	var out []string
	for _, d := range m.Disks {
		out = append(out, d.Index)
	}
	for _, b := range m.RAM {
		out = append(out, b.Index)
	}
	return append(out, m.DeviceState.Index, m.Stream.Index)
}

func (r *Repository) changesDir(d repo.Digest) string {
	return filepath.Join(r.captureDir(), changesDir, d.String())
}

// lock takes the set's capture lock, so that two processes never take
// checkpoints of one set at once.
func (r *Repository) lock() (unlock func(), err error) {
	f, err := filelock.TryLock(filepath.Join(r.captureDir(), lockFile))
	if errors.Is(err, filelock.ErrBusy) {
		return nil, fmt.Errorf("another ntc process is taking a checkpoint of %s in %s: %w", r.set, r.Dir(), ErrBusy)
	}
	if err != nil {
		return nil, fmt.Errorf("lock set %s: %w", r.set, err)
	}
	return func() { f.Close() }, nil
}

// removeChanges removes the recorded changes of versions the set no
// longer holds.
func (r *Repository) removeChanges() error {
	ents, err := os.ReadDir(filepath.Join(r.captureDir(), changesDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	vs, err := r.nodes.Versions(r.set)
	if err != nil {
		return err
	}
	held := map[string]bool{}
	for _, v := range vs {
		held[v.Digest.String()] = true
	}
	for _, e := range ents {
		if !held[e.Name()] {
			if err := os.RemoveAll(filepath.Join(r.captureDir(), changesDir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// created is when a manifest records a checkpoint: whole seconds, UTC.
func created() time.Time { return time.Now().UTC().Truncate(time.Second) }

// storeSource serves RAM page images from the store.
type storeSource map[string]*chunk.StoreImage

func (s storeSource) Block(name string, length int64) (io.ReaderAt, error) {
	img, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("no RAM image for block %q in the checkpoint", name)
	}
	if img.Size() < length {
		return nil, fmt.Errorf("RAM image of block %q holds %d bytes, want %d", name, img.Size(), length)
	}
	return img, nil
}
