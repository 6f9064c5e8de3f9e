package testguest

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"

	"github.com/ntc-project/ntc/qemu"
)

// maxLines bounds the serial lines a Console keeps.
const maxLines = 1 << 16

var tickLine = regexp.MustCompile(`^tick (\d+)$`)

// Console is the guest's serial console as lines, and the guest's tick
// count read from them: a VM's (QEMU's standard output) or a libvirt
// domain's (its console socket). Lines are numbered from 0; the newest
// 65536 are kept. Methods are safe for concurrent use.
type Console struct {
	lines *qemu.Backlog[string]

	mu   sync.Mutex
	tick int
}

// NewConsole returns an empty console.
func NewConsole() *Console { return &Console{lines: qemu.NewBacklog[string](maxLines)} }

// Add records one line, without its line ending.
func (c *Console) Add(line string) {
	if m := tickLine.FindStringSubmatch(line); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			c.mu.Lock()
			c.tick = n
			c.mu.Unlock()
		}
	}
	c.lines.Add(line)
}

// End says no more lines will come: waits that run out of lines fail with
// err.
func (c *Console) End(err error) { c.lines.End(err) }

// Lines returns the lines kept, oldest first.
func (c *Console) Lines() []string { return c.lines.Items() }

// Mark is the number of the next line.
func (c *Console) Mark() int { return c.lines.Mark() }

// WaitLine waits for a line matching re among lines numbered from on and
// returns its submatches and number.
func (c *Console) WaitLine(ctx context.Context, from int, re *regexp.Regexp) ([]string, int, error) {
	var m []string
	_, next, err := c.lines.Wait(ctx, from, func(l string) bool {
		m = re.FindStringSubmatch(l)
		return m != nil
	})
	if err != nil {
		return nil, -1, fmt.Errorf("wait for serial line %q: %w", re, err)
	}
	return m, next - 1, nil
}

// LastTick is the N of the last "tick N" line, 0 before the first.
func (c *Console) LastTick() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tick
}

// WaitTick waits until the guest has printed "tick N" with N ≥ n and
// returns the last tick then.
func (c *Console) WaitTick(ctx context.Context, n int) (int, error) {
	for {
		mark := c.lines.Mark()
		last := c.LastTick()
		if last >= n {
			return last, nil
		}
		if _, _, err := c.lines.Wait(ctx, mark, func(string) bool { return true }); err != nil {
			return c.LastTick(), fmt.Errorf("wait for tick %d (last %d): %w", n, c.LastTick(), err)
		}
	}
}

// SetTick carries the tick count over from an earlier console of the same
// guest: it never goes back.
func (c *Console) SetTick(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tick = max(c.tick, n)
}
