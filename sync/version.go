package sync

import (
	"context"
	"fmt"
	"io"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

// Source gives the content of an image's chunks to a sender. It is a plug-in
// point: an image file, a chunk store, a frozen qcow2 chain.
type Source interface {
	// ReadChunk returns the content of entry e (a data entry of the image's
	// index). The receiver verifies it against e.ID; a chunk it refused is
	// checked by the sender before it goes again.
	ReadChunk(ctx context.Context, e chunk.Entry) ([]byte, error)
}

// ReaderSource reads chunks from the image itself, at their offsets.
type ReaderSource struct{ R io.ReaderAt }

// ReadChunk reads e's bytes from the image.
func (s ReaderSource) ReadChunk(ctx context.Context, e chunk.Entry) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := make([]byte, e.Length)
	if _, err := s.R.ReadAt(b, e.Offset); err != nil && !(err == io.EOF) {
		return nil, fmt.Errorf("read chunk at %d: %w", e.Offset, err)
	}
	return b, nil
}

// ReadSpan fills p with the image's bytes at off: a run of consecutive
// chunks read at once.
func (s ReaderSource) ReadSpan(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.R.ReadAt(p, off); err != nil && !(err == io.EOF) {
		return fmt.Errorf("read chunks at %d: %w", off, err)
	}
	return nil
}

// StoreSource reads chunks from a chunk store by ID.
type StoreSource struct{ Store chunk.Store }

// ReadChunk fetches e's chunk from the store.
func (s StoreSource) ReadChunk(ctx context.Context, e chunk.Entry) ([]byte, error) {
	return s.Store.Get(ctx, e.ID)
}

// Image is one image of a version: its index and where its chunks come from.
type Image struct {
	Name   string
	Index  *chunk.Index
	Source Source
	// Base and Changed, if set, say that the image differs from the
	// version Base describes only in the Changed ranges (a disk's writes
	// since the last checkpoint, say). When the receiver holds exactly
	// that version, new chunks travel as patches: the changed bytes only,
	// the rest copied from the receiver's copy.
	Base    *chunk.Index
	Changed []chunk.Range
}

// Version is a set of images that travels and commits as one: the disks of
// a VM with its RAM and device state, or a few image files.
type Version struct {
	// Set names the series of versions on the receiver.
	Set string
	// Meta is opaque to sync and stored beside the version (a checkpoint's
	// manifest, for example); at most 1 MiB.
	Meta   []byte
	Images []Image
	// Recorded, if set, is this version as the sender's repository
	// (Sender.StateDir) holds it already, with Meta and the indexes of
	// Images exactly as committed there: a checkpoint of the node's own
	// repository. It is pushed as it is; nothing is recorded or pruned.
	Recorded *repo.Version
}

func (v *Version) check() error {
	if err := CheckName(v.Set); err != nil {
		return fmt.Errorf("set name: %w", err)
	}
	if len(v.Meta) > maxMeta {
		return fmt.Errorf("version metadata is %d bytes, limit %d", len(v.Meta), maxMeta)
	}
	seen := map[string]bool{}
	for _, im := range v.Images {
		if err := CheckName(im.Name); err != nil {
			return fmt.Errorf("image name: %w", err)
		}
		if seen[im.Name] {
			return fmt.Errorf("image %q appears twice", im.Name)
		}
		seen[im.Name] = true
		if err := im.Index.Check(); err != nil {
			return fmt.Errorf("image %s: %w", im.Name, err)
		}
	}
	return nil
}

// mergeZeroRuns returns v with its indexes in the form receivers store
// them, runs of zero entries merged (v itself when they are already).
func (v *Version) mergeZeroRuns() *Version {
	var out *Version
	for i, im := range v.Images {
		x := im.Index.MergeZeroRuns()
		if x == im.Index {
			continue
		}
		if out == nil {
			c := *v
			c.Images = append([]Image(nil), v.Images...)
			out = &c
		}
		out.Images[i].Index = x
	}
	if out == nil {
		return v
	}
	return out
}

// newChunk is one entry of the list a want bitmap indexes: the distinct
// chunk IDs of the inserted data entries of every image, in order of first
// appearance, with one entry that holds each (to read it from a Source).
type newChunk struct {
	image int
	entry chunk.Entry
}

// listNew walks each image's ops beside its resulting entries.
func listNew(ops [][]op, results [][]chunk.Entry) []newChunk {
	seen := map[chunk.ID]bool{}
	var out []newChunk
	for im := range ops {
		j := 0
		for _, o := range ops[im] {
			switch o.kind {
			case opKeep:
				j += o.n
			case opInsert:
				for _, e := range results[im][j : j+len(o.entries)] {
					if !e.Zero && !seen[e.ID] {
						seen[e.ID] = true
						out = append(out, newChunk{image: im, entry: e})
					}
				}
				j += len(o.entries)
			}
		}
	}
	return out
}
