package capture

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/ntc-project/ntc/repo"

	"github.com/ntc-project/ntc/qemu"
)

// Released says what Release did.
type Released struct {
	// Disks lists the disks now back on their own image, Overlays counts
	// the overlay files merged and removed.
	Disks    []string `json:"disks"`
	Overlays int      `json:"overlays"`
}

// Release leaves the guest as ntc found it: every overlay ntc created for
// the set's guest is merged back, live, into the disk's own image (an
// active block-commit; QEMU then writes to that image again), the overlay
// files are removed and the chains forgotten, so that the VM can be
// restarted from its own configuration. The next checkpoint reads the
// disks in full. A resumed copy's overlay on a received image is its disk
// and stays. Release takes the set's capture lock (ErrBusy while a
// checkpoint is taken).
func Release(ctx context.Context, cfg Config) (*Released, error) {
	if err := cfg.checkTarget(); err != nil {
		return nil, err
	}
	set := cmp.Or(cfg.Set, DefaultSet)
	if err := CheckName(set); err != nil {
		return nil, err
	}
	nodes, err := repo.OpenExisting(cfg.Dir)
	if err != nil {
		return nil, err
	}
	r := &Repository{nodes: nodes, set: set}
	if err := os.MkdirAll(r.captureDir(), 0o700); err != nil {
		return nil, err
	}
	unlock, err := r.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := r.loadState()
	if err != nil || st == nil {
		return &Released{}, err
	}
	s, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if !st.QEMU.Same(s.Peer()) {
		return nil, fmt.Errorf("release %s: the recorded overlays belong to another QEMU (pid %d) than the one at %s: nothing to merge", set, st.QEMU.PID, cfg.target())
	}
	live, err := queryDisks(ctx, s)
	if err != nil {
		return nil, err
	}
	out := &Released{}
	keep := st.Disks[:0]
	var errs []error
	for _, ds := range st.Disks {
		if ds.KeepBase || len(ds.Overlays) == 0 {
			keep = append(keep, ds)
			continue
		}
		active := ds.Overlays[len(ds.Overlays)-1]
		d := findDisk(live, ds.Name)
		if d == nil || len(d.Chain) == 0 || d.Chain[0].File != active.File {
			errs = append(errs, fmt.Errorf("%s: its active layer is not the overlay ntc recorded: left as it is", ds.Name))
			keep = append(keep, ds)
			continue
		}
		if err := activeCommit(ctx, s, active.Node, ds.Base.Node, "ntc-release-"+active.Node); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ds.Name, err))
			keep = append(keep, ds)
			continue
		}
		if cfg.Domain == "" {
			// The merged overlays' nodes still name the image as their
			// backing (and hold their files open): close them.
			for _, ov := range ds.Overlays {
				closeNode(ctx, s, ov.Node)
			}
		}
		for _, ov := range ds.Overlays {
			if err := os.Remove(ov.File); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove merged overlay: %w", err))
			}
		}
		out.Disks = append(out.Disks, ds.Name)
		out.Overlays += len(ds.Overlays)
	}
	st.Disks, st.Pending = keep, nil
	if err := r.saveState(st); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// closeNode closes a node ntc opened (blockdev-add) that no longer serves
// the guest; a node still in use stays.
func closeNode(ctx context.Context, s *qemu.Session, node string) error {
	return s.Run(ctx, "blockdev-del", map[string]any{"node-name": node}, nil)
}

func findDisk(disks []liveDisk, name string) *liveDisk {
	for i := range disks {
		if disks[i].Name == name {
			return &disks[i]
		}
	}
	return nil
}

// activeCommit merges the active layer top and everything down to base
// into base and makes base the active layer again: block-commit of the
// active layer, then block-job-complete once it is ready.
func activeCommit(ctx context.Context, s *qemu.Session, top, base, job string) error {
	return commitJob(ctx, s, top, top, base, job, true)
}
