package capture

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ntc-project/ntc/internal/atomicfile"

	"github.com/ntc-project/ntc/qemu"
)

// A Final checkpoint (a hand-off) pauses the guest for good. While it is
// paused so, DIR/sets/SET/capture/handoff-paused.json names its QEMU: a
// later Final checkpoint of the same QEMU (the hand-off run again after a
// failure, or after ntc was killed) takes the paused guest as it is, where
// any other checkpoint refuses a paused guest. Continue and Quit end it.
const pausedFile = "handoff-paused.json"

func pausedPath(dir, set string) string {
	return filepath.Join(dir, "sets", set, captureDir, pausedFile)
}

// markPaused records that ntc pauses QEMU p for a hand-off.
func markPaused(dir, set string, p qemu.Process) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(pausedPath(dir, set), 0o600, b)
}

// pausedForHandoff reports whether ntc paused QEMU p for a hand-off.
func pausedForHandoff(dir, set string, p qemu.Process) bool {
	b, err := os.ReadFile(pausedPath(dir, set))
	if err != nil {
		return false
	}
	var q qemu.Process
	return json.Unmarshal(b, &q) == nil && q.Same(p)
}

// clearPaused forgets a hand-off's pause.
func clearPaused(dir, set string) error {
	if err := os.Remove(pausedPath(dir, set)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Quit stops the QEMU of a guest that was handed off: QMP quit, or for a
// libvirt domain virDomainDestroy, so that libvirt itself stops it and
// records why (a QMP quit passed through would look to libvirt like a
// guest that shut down by itself). A persistent domain stays defined,
// shut off (destroyed), on the disks its XML names: virsh start boots it
// again, virsh undefine removes it; a transient one is gone.
func Quit(ctx context.Context, cfg Config) error {
	if cfg.Domain != "" {
		return destroyDomain(ctx, cfg)
	}
	return endHandoff(ctx, cfg, func(s *qemu.Session) error {
		if err := s.Run(ctx, "quit", nil, nil); err != nil && !errors.Is(err, qemu.ErrDisconnected) {
			return err
		}
		return nil
	})
}

// destroyDomain stops the handed-off domain cfg.Domain through libvirt
// (SIGTERM to its QEMU, SIGKILL after libvirt's grace period) and forgets
// the hand-off's pause. A domain that no longer runs is no error.
func destroyDomain(ctx context.Context, cfg Config) error {
	if err := cfg.checkTarget(); err != nil {
		return err
	}
	conn, err := DialLibvirt(ctx, cfg.Connect, cfg.Dial.ConnectTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	dom, err := conn.DomainLookupByName(cfg.Domain)
	if err != nil {
		return fmt.Errorf("stop %s: %w", cfg.target(), err)
	}
	if err := conn.DomainDestroy(dom); err != nil {
		if active, aerr := conn.DomainIsActive(dom); aerr != nil || active != 0 {
			return fmt.Errorf("stop %s (virDomainDestroy): %w", cfg.target(), err)
		}
	}
	return clearPaused(cfg.Dir, cmp.Or(cfg.Set, DefaultSet))
}
