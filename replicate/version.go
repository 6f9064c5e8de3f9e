package replicate

import (
	"context"
	"errors"
	"fmt"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// ErrNoCheckpoint: the set holds no checkpoint to push yet.
var ErrNoCheckpoint = errors.New("holds no checkpoint")

// Version is a checkpoint ready to push: its images over the node
// repository's store, which stays open until Close.
type Version struct {
	Repo *capture.Repository
	Seq  int
	// Sync is the version as package sync pushes it.
	Sync *ntcsync.Version
	// Patched lists the disks whose changes since the receiver's copy are
	// known, so that their new chunks can travel as patches.
	Patched []string
}

// Close closes the repository.
func (v *Version) Close() error { return v.Repo.Close() }

// OpenVersion reads checkpoint seq (0: the current one) of set in the node
// repository dir as a version to push: each disk, RAM block, the device
// state and the stream description as images read from the store, and the
// manifest as the version's metadata, exactly as committed. A disk whose
// index the receiver holds (prev, by image name) as of an earlier
// checkpoint gets that index as its Base and the extents written since
// then as Changed, so that its new chunks travel as patches.
func OpenVersion(ctx context.Context, dir, set string, seq int, prev map[string]*chunk.Index) (v *Version, err error) {
	r, err := capture.OpenRepositoryForReading(dir, set)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	var m *capture.Manifest
	if seq == 0 {
		if m, err = r.Latest(); err == nil && m == nil {
			return nil, fmt.Errorf("set %s of %s: %w yet", set, dir, ErrNoCheckpoint)
		}
	} else {
		m, err = r.Manifest(seq)
	}
	if err != nil {
		return nil, err
	}
	rv, err := r.Version(m.Seq)
	if err != nil {
		return nil, err
	}
	meta, err := r.Nodes().Meta(set, rv.Seq)
	if err != nil {
		return nil, err
	}
	imgs, err := r.Images(m)
	if err != nil {
		return nil, err
	}
	v = &Version{Repo: r, Seq: m.Seq, Sync: &ntcsync.Version{Set: set, Meta: meta, Recorded: rv}}
	src := ntcsync.StoreSource{Store: r.Store()}
	for _, im := range imgs {
		si := ntcsync.Image{Name: im.Name, Index: im.Index, Source: src}
		if p := prev[im.Name]; p != nil && im.Kind == capture.KindDisk {
			base, changed, ok, err := r.ChangedSince(m, im.Disk.Name, p.Equal)
			if err != nil {
				return nil, err
			}
			if ok {
				si.Base, si.Changed = base, changed
				v.Patched = append(v.Patched, im.Name)
			}
		}
		v.Sync.Images = append(v.Sync.Images, si)
	}
	return v, nil
}

// AckedCheckpoint returns this repository's number of the checkpoint of
// set with digest d (what a receiver last acknowledged), or 0 if the
// repository holds no such version.
func AckedCheckpoint(dir, set string, d repo.Digest) (int, error) {
	if d.IsZero() {
		return 0, nil
	}
	nodes, err := repo.OpenExisting(dir)
	if err != nil {
		return 0, err
	}
	v, err := nodes.ByDigest(set, d)
	if errors.Is(err, repo.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return int(v.Seq), nil
}
