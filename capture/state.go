package capture

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ntc-project/ntc/internal/atomicfile"

	"github.com/ntc-project/ntc/qemu"
)

// stateVersion is the version of state.json.
const stateVersion = 1

// state is DIR/sets/SET/capture/state.json: what capture needs to take the next checkpoint
// of the same QEMU incrementally. It is only trusted when QEMU, the
// repository's latest checkpoint and every disk's live chain agree with it;
// otherwise the next checkpoint reads the disks in full.
type state struct {
	Version int          `json:"version"`
	QEMU    qemu.Process `json:"qemu"`
	Disks   []diskState  `json:"disks"`
	// Pending lists overlays created and opened in QEMU for a snapshot
	// that has not happened (yet): if ntc dies before it, the next run
	// closes and removes them.
	Pending []layer `json:"pending,omitempty"`
}

// diskState is one disk's chain as ntc arranged it.
type diskState struct {
	Name   string `json:"name"`   // "disk-vda"
	Device string `json:"device"` // as in Disk.Device
	// Seq is the checkpoint whose index of this disk the chain continues:
	// that index is the image of every layer below the overlays with
	// Created >= Seq. 0: none (the next checkpoint reads the disk in full).
	Seq int `json:"seq"`
	// Base is the layer that was active when ntc first checkpointed this
	// disk for this QEMU: the guest's own image. Overlays are committed
	// into it; it is never deleted, and layers below it are never written.
	Base layer `json:"base"`
	// Overlays are the layers ntc created on top of Base, bottom to top;
	// the last one is the guest's active layer.
	Overlays []overlay `json:"overlays"`
	// KeepBase: Base is not the guest's to write (a resumed copy's
	// received image): frozen overlays merge into the first overlay
	// instead, which stays.
	KeepBase bool `json:"keep_base,omitempty"`
}

type layer struct {
	File   string `json:"file"`
	Node   string `json:"node"`
	Format string `json:"format"`
}

// overlay is a layer ntc created: at checkpoint attempt Created (the seq
// that attempt was to have), the guest's writes began going to it. If that
// checkpoint completed, the overlay holds exactly the writes since it.
type overlay struct {
	layer
	Created int `json:"created"`
}

func (r *Repository) statePath() string { return filepath.Join(r.captureDir(), stateFile) }

// loadState reads state.json; a missing or unreadable file is no state.
func (r *Repository) loadState() (*state, error) {
	b, err := os.ReadFile(r.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.statePath(), err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || st.Version != stateVersion {
		return nil, nil // unusable: the next checkpoint reads the disks in full
	}
	return &st, nil
}

func (r *Repository) saveState(st *state) error {
	st.Version = stateVersion
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(r.statePath(), 0o600, append(b, '\n'))
}

func (st *state) disk(name string) *diskState {
	if st == nil {
		return nil
	}
	for i := range st.Disks {
		if st.Disks[i].Name == name {
			return &st.Disks[i]
		}
	}
	return nil
}

// matchChain checks a disk's live chain (top first, as QEMU reports it)
// against the recorded one. It returns the recorded overlays still in the
// chain, bottom to top, and true when the recorded chain explains the live
// one: the same active overlay, the same base with the same layers below,
// and every recorded overlay either present or merged into the base by a
// commit ntc started after the checkpoint it belonged to was complete
// (Created < d.Seq). Only then do the overlays' own extents tell what changed.
func (d *diskState) matchChain(live []chainLayer) ([]overlay, bool) {
	if d == nil || d.Seq == 0 || len(d.Overlays) == 0 || len(live) == 0 {
		return nil, false
	}
	seq := d.Seq
	// Find the base in the live chain.
	bi := -1
	for i, l := range live {
		if l.File == d.Base.File {
			bi = i
			break
		}
	}
	if bi < 1 {
		return nil, false
	}
	above := live[:bi] // top first
	var kept []overlay
	j := len(above) - 1 // walk bottom-up
	for _, ov := range d.Overlays {
		if j >= 0 && above[j].File == ov.File {
			kept = append(kept, ov)
			j--
			continue
		}
		if ov.Created >= seq {
			return nil, false // holds changes since seq, yet gone
		}
	}
	if j >= 0 || len(kept) == 0 || kept[len(kept)-1].File != d.Overlays[len(d.Overlays)-1].File {
		return nil, false // unknown layers, or the active layer is not ours
	}
	return kept, true
}
