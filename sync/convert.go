package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/repo"
)

// oldManifest is a version's manifest.json in the layout ntc used before
// node repositories (DIR/sets/SET/v000042/).
type oldManifest struct {
	Set     string    `json:"set"`
	Version uint64    `json:"version"`
	Created time.Time `json:"created"`
	Sender  string    `json:"sender,omitempty"`
	Images  []struct {
		Name  string `json:"name"`
		Index string `json:"index"`
	} `json:"images"`
}

// convert brings every set in the older layout into the node repository:
// its versions, oldest first, each the parent of the next (node: its
// sender, created: when it was received), keeping their numbers; then the
// head is the old CURRENT; then the old directories go, newest first, and
// CURRENT last. Every step can be done again: a conversion a crash cut
// short is finished by the next open (what is left of the old versions is
// always the oldest ones, so their digests come out the same).
func (r *Repo) convert(ctx context.Context) error {
	sets, err := r.local.Sets()
	if err != nil {
		return err
	}
	for _, set := range sets {
		if err := r.convertSet(ctx, set); err != nil {
			return fmt.Errorf("convert %s from the older layout: %w", set, err)
		}
	}
	return nil
}

func (r *Repo) convertSet(ctx context.Context, set string) error {
	setDir := filepath.Join(r.dir, "sets", set)
	ents, err := os.ReadDir(setDir)
	if err != nil {
		return err
	}
	var old []uint64
	for _, e := range ents {
		n, err := strconv.ParseUint(strings.TrimPrefix(e.Name(), "v"), 10, 64)
		if err == nil && e.IsDir() && e.Name() == fmt.Sprintf("v%06d", n) {
			old = append(old, n)
		}
	}
	cur, err := r.readFile(path.Join("sets", set, "CURRENT"), maxCurrentFile)
	if errors.Is(err, fs.ErrNotExist) {
		cur = nil
		if len(old) == 0 {
			return nil
		}
	} else if err != nil {
		return err
	}
	slices.Sort(old)
	var parent repo.Digest
	for _, n := range old {
		v, idx, meta, err := r.readOldVersion(set, n, parent)
		if err != nil {
			return err
		}
		if _, err := r.local.Commit(ctx, v, idx, meta, repo.CommitOptions{Force: true, Seq: n}); err != nil {
			// Committed before a crash: the same digest, so Existed.
			return err
		}
		parent = v.Digest
	}
	if cur != nil {
		name := strings.TrimSpace(string(cur))
		n, err := strconv.ParseUint(strings.TrimPrefix(name, "v"), 10, 64)
		if err != nil || !strings.HasPrefix(name, "v") {
			return fmt.Errorf("CURRENT holds %q, want a version like v000001", name)
		}
		if err := r.local.SetHead(ctx, set, n); err != nil {
			return err
		}
	}
	for _, n := range slices.Backward(old) {
		tmp, err := os.MkdirTemp(filepath.Join(r.dir, "tmp"), "converted-")
		if err != nil {
			return err
		}
		err = os.Rename(filepath.Join(setDir, fmt.Sprintf("v%06d", n)), filepath.Join(tmp, "v"))
		if err == nil {
			err = atomicfile.SyncDir(setDir)
		}
		os.RemoveAll(tmp)
		if err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(setDir, "CURRENT")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(setDir)
}

// readOldVersion reads version n of the older layout as a sealed version
// with the given parent.
func (r *Repo) readOldVersion(set string, n uint64, parent repo.Digest) (*repo.Version, []*chunk.Index, []byte, error) {
	dir := path.Join("sets", set, fmt.Sprintf("v%06d", n))
	b, err := r.readFile(path.Join(dir, "manifest.json"), maxManifestFile)
	if err != nil {
		return nil, nil, nil, err
	}
	var m oldManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, nil, fmt.Errorf("read %s: %w", dir, err)
	}
	if m.Set != set || m.Version != n {
		return nil, nil, nil, fmt.Errorf("%s says it is version %d of %s", dir, m.Version, m.Set)
	}
	v := &repo.Version{Set: set, Parent: parent, Node: m.Sender, Created: m.Created.UTC(), From: m.Sender}
	var idx []*chunk.Index
	for _, im := range m.Images {
		if err := CheckName(im.Name); err != nil {
			return nil, nil, nil, err
		}
		x, err := r.local.ReadIndexFile(path.Join(dir, im.Name+".idx"))
		if err != nil {
			return nil, nil, nil, err
		}
		idx = append(idx, x)
		v.Images = append(v.Images, repo.Image{Name: im.Name})
	}
	meta, err := r.readFile(path.Join(dir, "meta"), maxMeta)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, err
	}
	if err := v.Seal(idx, meta); err != nil {
		return nil, nil, nil, err
	}
	return v, idx, meta, nil
}
