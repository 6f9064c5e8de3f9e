package capture

import (
	"context"
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

	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
)

// Repository is a local checkpoint repository:
//
//	DIR/store/packs/           chunk.PackStore: every chunk any checkpoint references
//	DIR/checkpoints/000042/    one checkpoint: an index per image, then manifest.json
//	DIR/state.json             capture's bookkeeping: the overlay chain, the QEMU it belongs to
//	DIR/lock                   held (flock) by the one process writing the repository
//
// A checkpoint directory without manifest.json is incomplete: readers
// ignore it and the next checkpoint removes it. One process writes a
// repository (OpenRepository) at a time; any number may read it
// (OpenRepositoryForReading), even while it is written.
type Repository struct {
	dir    string
	store  repoStore
	packs  *chunk.PackStore // nil when open for reading
	unlock func()
}

// repoStore is what a repository needs of its chunk store.
type repoStore interface {
	chunk.Store
	Close() error
}

// File and directory names inside a repository.
const (
	storeDir       = "store"
	checkpointsDir = "checkpoints"
	stateFile      = "state.json"
	lockFile       = "lock"
	manifestFile   = "manifest.json"
	deviceIndex    = "device.idx"
	streamIndex    = "stream.idx"
)

// ManifestVersion is the version of manifest.json this package writes.
// Version 2 describes the machine as data (Machine); version 1 recorded
// the source's command line and is refused (ErrOldManifest).
const ManifestVersion = 2

// Manifest describes one complete checkpoint.
type Manifest struct {
	Version     int       `json:"version"`
	Seq         int       `json:"seq"`
	Parent      int       `json:"parent"` // the previous complete checkpoint, 0 for none
	Created     time.Time `json:"created"`
	QEMUVersion string    `json:"qemu_version"`
	QEMUPackage string    `json:"qemu_package,omitempty"`
	Machine     Machine   `json:"machine"`
	Disks       []Disk    `json:"disks"`
	RAM         []RAM     `json:"ram"`
	// DeviceState is the device blob of the migration stream (everything
	// after the RAM through the EOF marker), CDC-indexed.
	DeviceState ImageRef   `json:"device_state"`
	Stream      StreamInfo `json:"stream"`
	// Method is how RAM was captured: "precopy" or "background-snapshot".
	Method Method `json:"method"`
	// GuestPauseMS is how long the guest was paused: QEMU's STOP to RESUME.
	GuestPauseMS float64 `json:"guest_pause_ms"`
	Stats        Stats   `json:"stats"`
}

// Disk is one disk image of a checkpoint: the guest-visible content at the
// checkpoint instant.
type Disk struct {
	Name   string `json:"name"`   // "disk-vda": the index file is Name+".idx"
	Node   string `json:"node"`   // the node (or -drive id) the disk's device names: Machine's drive references
	Device string `json:"device"` // qdev id ("vda") or drive name
	// File and Format are the image the source's command line names for
	// Node (ntc's overlays sit on top of it while it runs): a record of the
	// source, never opened by a receiver.
	File   string `json:"file"`
	Format string `json:"format"`
	Size   int64  `json:"size"`
	Index  string `json:"index"`
	// Mode is "full" (the whole disk was read) or "incremental" (only the
	// extents written since the parent checkpoint).
	Mode string `json:"mode"`
	// BytesChanged is the size of the extents written since the parent
	// (whole clusters), or the disk size for a full read; BytesRead what
	// was read to index it.
	BytesChanged int64 `json:"bytes_changed"`
	BytesRead    int64 `json:"bytes_read"`
	// Changes, for an incremental disk, names the file that lists the
	// extents written since the parent checkpoint (Repository.Changes).
	Changes string `json:"changes,omitempty"`
}

// RAM is one RAM block of a checkpoint, indexed by 4 KiB page.
type RAM struct {
	Name  string `json:"name"` // QEMU's block name, e.g. "pc.ram", "/rom@etc/acpi/tables"
	Index string `json:"index"`
	Size  int64  `json:"size"`
}

// ImageRef names a CDC-indexed blob of a checkpoint.
type ImageRef struct {
	Index string `json:"index"`
	Size  int64  `json:"size"`
}

// StreamFormat is the format of the stream description blob.
const StreamFormat = "ntc-migstream-1"

// StreamInfo says how to rebuild the migration stream: the stream
// description (header, configuration, RAM block list, record layout,
// VMDESCRIPTION) is a JSON blob, CDC-indexed like the device state; the
// pages come from the RAM indexes and the device state from DeviceState.
// Repository.Stream does it.
type StreamInfo struct {
	Format   string `json:"format"`
	Index    string `json:"index"`
	Size     int64  `json:"size"`
	Machine  string `json:"machine"` // from the stream's configuration section
	PageSize int64  `json:"page_size"`
	// Bytes is the length of the stream QEMU sent.
	Bytes int64 `json:"bytes"`
}

// Stats is what a checkpoint cost and found; `ntc checkpoint --json`
// prints it.
type Stats struct {
	GuestPauseMS float64 `json:"guest_pause_ms"`
	// PauseSteps says where the pause went: QEMU's events and ntc's steps
	// from STOP to RESUME.
	PauseSteps []PauseStep `json:"pause_steps,omitempty"`
	DurationMS float64     `json:"duration_ms"`
	// RAMBytes is the size of all RAM blocks (guest RAM, video RAM, ROMs).
	RAMBytes     int64 `json:"ram_bytes"`
	RAMPages     int64 `json:"ram_pages"`      // non-zero pages
	RAMZeroPages int64 `json:"ram_zero_pages"` // pages that read as zeros
	// RAMPagesNew counts the distinct page contents the store lacked.
	RAMPagesNew int64 `json:"ram_pages_new"`
	RAMBytesNew int64 `json:"ram_bytes_new"`
	// RAMPagesResent counts pages the stream carried more than once (a
	// precopy migration resends what the guest dirtied meanwhile).
	RAMPagesResent int64 `json:"ram_pages_resent"`
	StreamBytes    int64 `json:"stream_bytes"`
	// DiskBytesRead is what was read from the disk layers to index them.
	DiskBytesRead int64 `json:"disk_bytes_read"`
	// DiskBytesChanged is the size of the extents written since the parent
	// checkpoint (whole clusters), or of the whole disks for a full read.
	DiskBytesChanged int64  `json:"disk_bytes_changed"`
	DiskChunksNew    int    `json:"disk_chunks_new"`
	DiskBytesNew     int64  `json:"disk_bytes_new"`
	DeviceBytes      int64  `json:"device_bytes"`
	DiskMode         string `json:"disk_mode"` // "full", "incremental" or "mixed"
	// Committed counts the overlays merged back into their base after the
	// checkpoint; CommitError says why merging failed, if it did (the
	// checkpoint is complete either way).
	Committed   int    `json:"overlays_committed"`
	CommitError string `json:"commit_error,omitempty"`
}

// OpenRepository opens, creating if needed, the repository in dir for
// writing. Only one process may hold it so (ErrBusy); Close releases it.
func OpenRepository(dir string) (*Repository, error) {
	abs, err := repoDir(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, checkpointsDir), 0o700); err != nil {
		return nil, fmt.Errorf("open checkpoint repository: %w", err)
	}
	r := &Repository{dir: abs}
	if r.unlock, err = r.lock(); err != nil {
		return nil, err
	}
	if err := checkStoreLayout(abs); err != nil {
		r.unlock()
		return nil, err
	}
	if r.packs, err = chunk.OpenPackStore(filepath.Join(abs, storeDir)); err != nil {
		r.unlock()
		return nil, fmt.Errorf("open checkpoint repository: %w", err)
	}
	r.store = r.packs
	return r, nil
}

// OpenRepositoryForReading opens the repository in dir to read its
// checkpoints, while another process may be taking one. It sees the chunks
// stored when it was opened, which include those of every complete
// checkpoint: a manifest is written after the chunks are durable.
func OpenRepositoryForReading(dir string) (*Repository, error) {
	abs, err := repoDir(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(abs, checkpointsDir)); err != nil {
		return nil, fmt.Errorf("open checkpoint repository %s: %w (is it a directory 'ntc checkpoint --out' wrote?)", dir, err)
	}
	if err := checkStoreLayout(abs); err != nil {
		return nil, err
	}
	st, err := chunk.OpenPackStoreReadOnly(filepath.Join(abs, storeDir))
	if err != nil {
		return nil, fmt.Errorf("open checkpoint repository: %w", err)
	}
	return &Repository{dir: abs, store: st}, nil
}

func repoDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("open checkpoint repository: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("open checkpoint repository: %w", err)
	}
	return abs, nil
}

// checkStoreLayout refuses a repository whose store is the one file per
// chunk layout of earlier ntc versions.
func checkStoreLayout(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, storeDir, "chunks")); err == nil {
		return fmt.Errorf("checkpoint repository %s keeps its chunks in the one-file-per-chunk layout of an older ntc: start a new repository (another --out)", dir)
	}
	return nil
}

// Close releases the repository: it makes what was stored durable, closes
// the store and, when open for writing, unlocks it.
func (r *Repository) Close() error {
	err := r.store.Close()
	if r.unlock != nil {
		r.unlock()
		r.unlock = nil
	}
	if err != nil {
		return fmt.Errorf("close checkpoint repository %s: %w", r.dir, err)
	}
	return nil
}

// Dir returns the repository's directory (absolute).
func (r *Repository) Dir() string { return r.dir }

// Store returns the chunk store.
func (r *Repository) Store() chunk.Store { return r.store }

// sync makes every chunk stored so far durable.
func (r *Repository) sync(ctx context.Context) error {
	if r.packs == nil {
		return fmt.Errorf("checkpoint repository %s: %w", r.dir, chunk.ErrReadOnly)
	}
	return r.packs.Sync(ctx)
}

// CheckpointDir returns the directory of checkpoint seq.
func (r *Repository) CheckpointDir(seq int) string {
	return filepath.Join(r.dir, checkpointsDir, seqName(seq))
}

func seqName(seq int) string { return fmt.Sprintf("%06d", seq) }

// Checkpoints returns the sequence numbers of the complete checkpoints, in
// order.
func (r *Repository) Checkpoints() ([]int, error) {
	all, err := r.listSeqs()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, s := range all {
		_, err := os.Stat(filepath.Join(r.CheckpointDir(s), manifestFile))
		switch {
		case err == nil:
			out = append(out, s)
		case !errors.Is(err, fs.ErrNotExist):
			// Not known to be incomplete: Collect would drop its chunks.
			return nil, fmt.Errorf("checkpoint %d: %w", s, err)
		}
	}
	return out, nil
}

// listSeqs returns every checkpoint directory's number, complete or not.
func (r *Repository) listSeqs() ([]int, error) {
	ents, err := os.ReadDir(filepath.Join(r.dir, checkpointsDir))
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n <= 0 || !e.IsDir() || e.Name() != seqName(n) {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// Latest returns the newest complete checkpoint's manifest, or nil when the
// repository holds none.
func (r *Repository) Latest() (*Manifest, error) {
	seqs, err := r.Checkpoints()
	if err != nil || len(seqs) == 0 {
		return nil, err
	}
	return r.Manifest(seqs[len(seqs)-1])
}

// Manifest reads checkpoint seq's manifest.
func (r *Repository) Manifest(seq int) (*Manifest, error) {
	root, err := os.OpenRoot(r.CheckpointDir(seq))
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %d: %w", seq, err)
	}
	defer root.Close()
	p := filepath.Join(r.CheckpointDir(seq), manifestFile)
	m, err := ReadManifestFile(root, manifestFile)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %d: %w", seq, err)
	}
	if m.Seq != seq {
		return nil, fmt.Errorf("%s: manifest says checkpoint %d", p, m.Seq)
	}
	return m, nil
}

// Index reads an index file (a name from a manifest) of checkpoint seq.
func (r *Repository) Index(seq int, name string) (*chunk.Index, error) {
	if err := checkIndexName("checkpoint "+strconv.Itoa(seq), name); err != nil {
		return nil, err
	}
	return chunk.ReadIndexFile(filepath.Join(r.CheckpointDir(seq), name))
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

// lock takes the repository's lock file, so that two processes never
// write one repository at once.
func (r *Repository) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(r.dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock checkpoint repository: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another ntc process is writing %s (a checkpoint): wait for it to finish: %w", r.dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock checkpoint repository: %w", err)
	}
	return func() { f.Close() }, nil
}

// removeIncomplete removes checkpoint directories without a manifest and
// returns their numbers.
func (r *Repository) removeIncomplete() ([]int, error) {
	all, err := r.listSeqs()
	if err != nil {
		return nil, err
	}
	var removed []int
	for _, s := range all {
		dir := r.CheckpointDir(s)
		if _, err := os.Stat(filepath.Join(dir, manifestFile)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return removed, fmt.Errorf("remove incomplete checkpoint %d: %w", s, err)
		}
		removed = append(removed, s)
	}
	return removed, nil
}

// writeManifest writes m as the last file of its checkpoint, atomically.
func (r *Repository) writeManifest(m *Manifest) error {
	b, err := EncodeManifest(m)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(r.CheckpointDir(m.Seq), manifestFile), 0o600, b)
}

// fileName turns a QEMU name into a file name part: letters, digits, '.',
// '_' and '-' stay, everything else becomes '_'.
func fileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			b[i] = '_'
		}
	}
	out := strings.TrimLeft(string(b), ".")
	if out == "" {
		out = "_"
	}
	return out
}

// uniqueName returns base, or base with a numeric suffix, not in used, and
// adds it.
func uniqueName(used map[string]bool, base string) string {
	name := base
	for i := 2; used[name]; i++ {
		name = base + "-" + strconv.Itoa(i)
	}
	used[name] = true
	return name
}

// writeIndex writes an index file of a checkpoint, private (0600) like
// everything in a repository.
func writeIndex(path string, x *chunk.Index) error {
	if err := chunk.WriteIndexFile(path, x); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}
