package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/ntc-project/ntc/internal/atomicfile"
)

// Runner says which node runs a set's machine now, as this repository
// knows it.
type Runner struct {
	Node string `json:"node"`
	// Version is the digest of the version the machine was started from or
	// handed off at.
	Version Digest    `json:"version"`
	Since   time.Time `json:"since"`
}

// Runner returns who runs the set, or nil when nobody is recorded.
func (r *Repo) Runner(set string) (*Runner, error) {
	if err := CheckName(set); err != nil {
		return nil, err
	}
	b, err := r.read(filepath.Join(setRel(set), runnerFile), 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read who runs %s: %w", set, err)
	}
	var rn Runner
	if err := json.Unmarshal(b, &rn); err != nil {
		return nil, fmt.Errorf("read who runs %s: %w", set, err)
	}
	return &rn, nil
}

// SetRunner records that node runs the set from version d (node "" clears
// it: nobody runs it).
func (r *Repo) SetRunner(ctx context.Context, set, node string, d Digest) error {
	if err := CheckName(set); err != nil {
		return err
	}
	unlock, err := r.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	b, err := json.Marshal(Runner{Node: node, Version: d, Since: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := mkdirPrivate(r.setDir(set)); err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(r.setDir(set), runnerFile), fileMode, b)
}
