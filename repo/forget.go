package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
)

// RemoveSet removes set from the repository: its versions, head, lineage,
// runner record and everything else under DIR/sets/SET. The directory is
// first renamed into DIR/tmp, so a crash never leaves half a set among
// the others. Its chunks stay in the store until a collection (Collect).
func (r *Repo) RemoveSet(ctx context.Context, set string) error {
	if err := CheckName(set); err != nil {
		return err
	}
	unlock, err := r.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	src := r.setDir(set)
	if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove set %s: %w", set, ErrNotFound)
	}
	tmp, err := os.MkdirTemp(filepath.Join(r.dir, tmpDir), "removed-")
	if err != nil {
		return fmt.Errorf("remove set %s: %w", set, err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Rename(src, filepath.Join(tmp, set)); err != nil {
		return fmt.Errorf("remove set %s: %w", set, err)
	}
	return atomicfile.SyncDir(filepath.Join(r.dir, setsDir))
}

// Footprint is what only some versions refer to: the chunks no other
// version of any set needs, which a collection drops once those versions
// are removed.
type Footprint struct {
	Chunks int
	Bytes  int64 // their data, before compression
}

// FootprintOf returns the footprint of the versions chosen says are.
func (r *Repo) FootprintOf(ctx context.Context, chosen func(set string, seq uint64) bool) (Footprint, error) {
	only := map[chunk.ID]int64{}
	others := map[chunk.ID]struct{}{}
	sets, err := r.Sets()
	if err != nil {
		return Footprint{}, err
	}
	for _, set := range sets {
		vs, err := r.Versions(set)
		if err != nil {
			return Footprint{}, err
		}
		for _, v := range vs {
			for _, im := range v.Images {
				if err := ctx.Err(); err != nil {
					return Footprint{}, err
				}
				x, err := r.Index(set, v.Seq, im.Name)
				if err != nil {
					return Footprint{}, err
				}
				for _, e := range x.Entries {
					switch {
					case e.Zero:
					case chosen(set, v.Seq):
						only[e.ID] = e.Length
					default:
						others[e.ID] = struct{}{}
					}
				}
			}
		}
	}
	var f Footprint
	for id, n := range only {
		if _, ok := others[id]; !ok {
			f.Chunks++
			f.Bytes += n
		}
	}
	return f, nil
}
