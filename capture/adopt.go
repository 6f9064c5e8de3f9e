package capture

import (
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/ntc-project/ntc/repo"

	"github.com/ntc-project/ntc/qemu"
)

// Adopt makes the QEMU at sess, a copy resumed from checkpoint seq of set
// in the node repository dir, that set's guest: its next checkpoint into
// dir continues the set from seq (parent seq) and is incremental, reading
// only what the copy wrote since it was resumed. Each disk of the copy must
// be a fresh overlay (the copy's writes) on an image holding exactly
// checkpoint seq's disk, as package resume arranges; that image is never
// written by ntc (the overlay is what later overlays merge into). node is
// recorded as the node that runs the set now.
func Adopt(ctx context.Context, sess *qemu.Session, dir, set string, seq int, node string) error {
	if err := CheckName(set); err != nil {
		return fmt.Errorf("adopt: set name: %w", err)
	}
	nodes, err := repo.OpenExisting(dir)
	if err != nil {
		return err
	}
	r := &Repository{nodes: nodes, set: set}
	m, err := r.Manifest(seq)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	v, err := r.Version(seq)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	disks, err := queryDisks(ctx, sess)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	st := &state{QEMU: sess.Peer()}
	for _, d := range disks {
		if m.disk(d.Name) == nil {
			return fmt.Errorf("adopt: the copy's disk %s is not in checkpoint %d of %s", d.Name, seq, set)
		}
		if len(d.Chain) < 2 || d.Chain[0].Format != "qcow2" {
			return fmt.Errorf("adopt: disk %s is not an overlay on the received image: %w", d.Name, ErrUnsupported)
		}
		top, below := d.Chain[0], d.Chain[1]
		st.Disks = append(st.Disks, diskState{
			Name: d.Name, Device: d.Device, Seq: seq, KeepBase: true,
			Base:     layer{File: below.File, Format: below.Format},
			Overlays: []overlay{{layer: layer{File: top.File, Node: d.Node, Format: top.Format}, Created: seq}},
		})
	}
	for _, md := range m.Disks {
		if !slices.ContainsFunc(st.Disks, func(d diskState) bool { return d.Name == md.Name }) {
			return fmt.Errorf("adopt: checkpoint %d's disk %s is not among the copy's", seq, md.Name)
		}
	}
	if err := os.MkdirAll(r.captureDir(), 0o700); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	unlock, err := r.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := r.saveState(st); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	return nodes.SetRunner(ctx, set, node, v.Digest)
}
