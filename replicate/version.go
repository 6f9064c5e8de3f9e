package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// Version is a checkpoint ready to push: its images over the capture
// repository's store, which stays open until Close.
type Version struct {
	Repo   *capture.Repository
	Seq    int
	Images []ntcsync.Image
	// Patched lists the disks whose changes since the receiver's copy are
	// known, so that their new chunks can travel as patches.
	Patched []string
}

// Close closes the capture repository.
func (v *Version) Close() error { return v.Repo.Close() }

// ManifestImage is the image that carries a checkpoint's manifest: an
// image rather than sync's Version.Meta so that the receiver materializes it
// as a file beside the others, where resume reads it (resume.ManifestImage).
const ManifestImage = "manifest.json"

// OpenVersion reads checkpoint seq (0: the newest) of the capture
// repository in dir as a version: each disk, RAM block, the device state
// and the stream description as images read from the repository's store,
// and the manifest as one more image. A disk whose index the receiver holds
// (prev, by image name) as of an earlier checkpoint gets that index as its
// Base and the extents written since then as Changed, so that its new
// chunks travel as patches.
func OpenVersion(ctx context.Context, dir string, seq int, prev map[string]*chunk.Index) (v *Version, err error) {
	repo, err := capture.OpenRepositoryForReading(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			repo.Close()
		}
	}()
	var m *capture.Manifest
	if seq == 0 {
		if m, err = repo.Latest(); err == nil && m == nil {
			return nil, fmt.Errorf("%s holds no complete checkpoint yet: take one with 'ntc checkpoint --out %s'", dir, dir)
		}
	} else {
		m, err = repo.Manifest(seq)
	}
	if err != nil {
		return nil, err
	}
	imgs, err := repo.Images(m)
	if err != nil {
		return nil, err
	}
	meta, mx, err := manifestIndex(ctx, m)
	if err != nil {
		return nil, err
	}
	v = &Version{Repo: repo, Seq: m.Seq}
	src := ntcsync.StoreSource{Store: repo.Store()}
	for _, im := range imgs {
		si := ntcsync.Image{Name: im.Name, Index: im.Index, Source: src}
		if p := prev[im.Name]; p != nil && im.Kind == capture.KindDisk {
			base, changed, ok, err := repo.ChangedSince(m, im.Disk.Name, func(x *chunk.Index) bool { return sameIndex(x, p) })
			if err != nil {
				return nil, err
			}
			if ok {
				si.Base, si.Changed = base, changed
				v.Patched = append(v.Patched, im.Name)
			}
		}
		v.Images = append(v.Images, si)
	}
	v.Images = append(v.Images, ntcsync.Image{Name: ManifestImage, Index: mx, Source: ntcsync.ReaderSource{R: bytes.NewReader(meta)}})
	return v, nil
}

// manifestIndex returns the manifest image of checkpoint m and its index.
func manifestIndex(ctx context.Context, m *capture.Manifest) ([]byte, *chunk.Index, error) {
	meta, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	mx, _, err := chunk.Build(ctx, chunk.Bytes(meta), chunk.DefaultCDC(), chunk.Options{})
	if err != nil {
		return nil, nil, fmt.Errorf("index the manifest of checkpoint %d: %w", m.Seq, err)
	}
	return meta, mx, nil
}

// AckedCheckpoint returns the checkpoint of the capture repository in dir
// whose manifest image the receiver holds (prev, its indexes by image name,
// as sync.Sender.LastAcked returns them), or 0 if none is there.
func AckedCheckpoint(ctx context.Context, dir string, prev map[string]*chunk.Index) (int, error) {
	px := prev[ManifestImage]
	if px == nil {
		return 0, nil
	}
	repo, err := capture.OpenRepositoryForReading(dir)
	if err != nil {
		return 0, err
	}
	defer repo.Close()
	seqs, err := repo.Checkpoints()
	if err != nil {
		return 0, err
	}
	for _, seq := range slices.Backward(seqs) {
		m, err := repo.Manifest(seq)
		if err != nil {
			return 0, err
		}
		_, mx, err := manifestIndex(ctx, m)
		if err != nil {
			return 0, err
		}
		if sameIndex(mx, px) {
			return seq, nil
		}
	}
	return 0, nil
}

// sameIndex reports whether two indexes describe the same image the same
// way.
func sameIndex(a, b *chunk.Index) bool {
	return a.Params == b.Params && a.Size == b.Size && slices.Equal(a.Entries, b.Entries)
}
