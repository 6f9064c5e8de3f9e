package testguest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrSerialEnded means the process writing a serial log ended before the
// log showed the ticks waited for.
var ErrSerialEnded = errors.New("the guest's process ended")

// serialPoll is how often WaitSerialTicks reads the log again: nothing
// announces a line QEMU appends to the file.
const serialPoll = 50 * time.Millisecond

// ReadSerialFile reads a serial console QEMU writes to a file (a resumed
// copy's serial log): its non-empty lines without line endings, and N of
// each "tick N" line among them. A line still being written (no line
// ending yet) is not one; a file not there yet has no lines.
func ReadSerialFile(path string) (lines []string, ticks []int, err error) {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("read serial log: %w", err)
	}
	whole, _ := cutLast(string(b), "\n")
	for _, l := range strings.Split(strings.ReplaceAll(whole, "\r", ""), "\n") {
		if l == "" {
			continue
		}
		lines = append(lines, l)
		if m := tickLine.FindStringSubmatch(l); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil {
				ticks = append(ticks, n)
			}
		}
	}
	return lines, ticks, nil
}

// WaitSerialTicks waits until the serial log at path shows n tick lines or
// more and returns ReadSerialFile's answer then. When exited is closed (the
// process writing the log ended: a nil exited never is) it fails with
// ErrSerialEnded.
func WaitSerialTicks(ctx context.Context, path string, n int, exited <-chan struct{}) ([]string, []int, error) {
	t := time.NewTicker(serialPoll)
	defer t.Stop()
	for {
		lines, ticks, err := ReadSerialFile(path)
		if err != nil || len(ticks) >= n {
			return lines, ticks, err
		}
		select {
		case <-exited:
			return lines, ticks, fmt.Errorf("%s shows %d ticks of %d: %w", path, len(ticks), n, ErrSerialEnded)
		case <-ctx.Done():
			return lines, ticks, fmt.Errorf("%s shows %d ticks of %d: %w", path, len(ticks), n, ctx.Err())
		case <-t.C:
		}
	}
}

// cutLast cuts s around the last sep ("" and s when there is none).
func cutLast(s, sep string) (before, after string) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):]
	}
	return "", s
}
