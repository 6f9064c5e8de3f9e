package capture

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/repo"
)

// ImageKind says what an image of a checkpoint holds.
type ImageKind string

// The kinds of images a checkpoint holds.
const (
	KindDisk   ImageKind = "disk"   // a disk's content at the checkpoint instant
	KindRAM    ImageKind = "ram"    // one RAM block, page by page
	KindDevice ImageKind = "device" // the device state blob
	KindStream ImageKind = "stream" // the stream description (Manifest.Stream)
)

// Image is one image of a checkpoint: its index over the repository's
// store, under a name unique in the checkpoint (the index file's name
// without ".idx": "disk-vda", "ram-pc.ram", "device", "stream").
type Image struct {
	Name  string
	Kind  ImageKind
	Index *chunk.Index
	// Disk is the manifest's entry for a disk image, nil otherwise.
	Disk *Disk
}

// Images reads the indexes of every image of checkpoint m: disks, RAM
// blocks, device state and stream description, in that order.
func (r *Repository) Images(m *Manifest) ([]Image, error) {
	var out []Image
	add := func(kind ImageKind, index string, size int64, d *Disk) error {
		x, err := r.Index(m.Seq, index)
		if err != nil {
			return err
		}
		if x.Size != size {
			return fmt.Errorf("checkpoint %d: %s describes %d bytes, the manifest says %d", m.Seq, index, x.Size, size)
		}
		out = append(out, Image{Name: strings.TrimSuffix(index, ".idx"), Kind: kind, Index: x, Disk: d})
		return nil
	}
	for i := range m.Disks {
		if err := add(KindDisk, m.Disks[i].Index, m.Disks[i].Size, &m.Disks[i]); err != nil {
			return nil, err
		}
	}
	for _, b := range m.RAM {
		if err := add(KindRAM, b.Index, b.Size, nil); err != nil {
			return nil, err
		}
	}
	if err := add(KindDevice, m.DeviceState.Index, m.DeviceState.Size, nil); err != nil {
		return nil, err
	}
	if err := add(KindStream, m.Stream.Index, m.Stream.Size, nil); err != nil {
		return nil, err
	}
	return out, nil
}

// changesSuffix ends the name of a disk's changes file in a checkpoint.
const changesSuffix = ".changes.json"

// writeChanges records the extents written to a disk since the parent
// checkpoint, as a JSON list of [offset, length] pairs.
func writeChanges(path string, rs []chunk.Range) error {
	pairs := make([][2]int64, len(rs))
	for i, r := range rs {
		pairs[i] = [2]int64{r.Off, r.Len}
	}
	b, err := json.Marshal(pairs)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, 0o600, append(b, '\n'))
}

// Changes returns the extents written to disk d of checkpoint seq since
// its parent checkpoint; ok is false when the checkpoint read the disk in
// full (every byte may have changed).
func (r *Repository) Changes(seq int, d *Disk) (rs []chunk.Range, ok bool, err error) {
	if d.Changes == "" {
		return nil, false, nil
	}
	if err := CheckName(d.Changes); err != nil {
		return nil, false, fmt.Errorf("checkpoint %d: changes file: %w", seq, err)
	}
	v, err := r.Version(seq)
	if err != nil {
		return nil, false, err
	}
	p := filepath.Join(r.changesDir(v.Digest), d.Changes)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil // taken on another node: its changes are not known here
	}
	if err != nil {
		return nil, false, fmt.Errorf("checkpoint %d: %w", seq, err)
	}
	var pairs [][2]int64
	if err := json.Unmarshal(b, &pairs); err != nil {
		return nil, false, fmt.Errorf("read %s: %w", p, err)
	}
	rs = make([]chunk.Range, len(pairs))
	for i, pr := range pairs {
		if pr[0] < 0 || pr[1] < 0 || pr[0]+pr[1] > d.Size || pr[0]+pr[1] < pr[0] {
			return nil, false, fmt.Errorf("read %s: extent %d+%d outside the %d-byte disk", p, pr[0], pr[1], d.Size)
		}
		rs[i] = chunk.Range{Off: pr[0], Len: pr[1]}
	}
	return rs, true, nil
}

// maxChangesWalk bounds how many checkpoints ChangedSince looks back.
const maxChangesWalk = 64

// ChangedSince looks back from checkpoint m, through its parents, for the
// checkpoint whose index of the disk called name isBase accepts (the index
// a receiver holds, say), and returns that index with the extents written
// to the disk since then. ok is false when no such checkpoint is found
// within reach of recorded changes (a full read or a pruned checkpoint
// breaks the chain).
func (r *Repository) ChangedSince(m *Manifest, name string, isBase func(*chunk.Index) bool) (base *chunk.Index, changed []chunk.Range, ok bool, err error) {
	cur := m
	for range maxChangesWalk {
		d := cur.disk(name)
		if d == nil || cur.Parent == 0 {
			return nil, nil, false, nil
		}
		rs, known, err := r.Changes(cur.Seq, d)
		if err != nil || !known {
			return nil, nil, false, err
		}
		changed = append(changed, rs...)
		parent, err := r.Manifest(cur.Parent)
		if errors.Is(err, repo.ErrNotFound) {
			return nil, nil, false, nil // pruned: the chain ends here
		}
		if err != nil {
			return nil, nil, false, err
		}
		pd := parent.disk(name)
		if pd == nil {
			return nil, nil, false, nil
		}
		x, err := r.Index(parent.Seq, pd.Index)
		if err != nil {
			return nil, nil, false, err
		}
		if isBase(x) {
			size := max(x.Size, m.disk(name).Size)
			return x, chunk.NormalizeRanges(changed, size), true, nil
		}
		cur = parent
	}
	return nil, nil, false, nil
}
