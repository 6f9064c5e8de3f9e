package capture

import (
	"encoding/json"
	"errors"
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
