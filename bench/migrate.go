package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ntc-project/ntc/bench/link"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/qemu"
)

// migratePort is where the destination QEMU listens, inside B.
const migratePort = 4444

// migrateGrace is added to the time one pass over the guest's RAM takes at
// the link rate before an unconverged migration is finished by pausing the
// guest.
const migrateGrace = 5 * time.Second

// runMigrate measures QEMU's own live migration of the guest's RAM across
// the link: the guest is restored from the new checkpoint (its stream and
// disk) into a QEMU inside A and left running; a QEMU started with the same
// machine arguments inside B waits with -incoming tcp; then A migrates to B
// with QEMU's defaults (precopy, 300 ms downtime limit) and no bandwidth
// cap. A guest that dirties RAM faster than the link carries never
// converges: after one pass over its RAM at the link rate (plus
// migrateGrace) the source is paused, which finishes the migration, and
// the note says so. The disk does not travel (QEMU expects shared
// storage): both QEMUs get a copy of the checkpoint's disk.
func runMigrate(ctx context.Context, l *link.Link, sc *Scenario, dir string, c *Case) error {
	st := sc.VM
	if st == nil {
		return fmt.Errorf("%s is not a VM scenario", sc.Name)
	}
	a, b := l.A(), l.B()
	dst, err := startIn(ctx, b, st, dir, "dst", "-incoming", "tcp:"+netip.AddrPortFrom(b.Addr, migratePort).String())
	if err != nil {
		return err
	}
	defer dst.Close()
	src, err := startIn(ctx, a, st, dir, "src", "-incoming", "defer")
	if err != nil {
		return err
	}
	defer src.Close()

	s, err := qemu.Dial(ctx, src.QMPPath(), qemu.DialOptions{})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := restoreRunning(ctx, s, src, st); err != nil {
		return err
	}

	// Both ends report the migration's progress as events.
	ds, err := qemu.Dial(ctx, dst.QMPPath(), qemu.DialOptions{})
	if err != nil {
		return err
	}
	defer ds.Close()
	events := map[string]any{"capabilities": []map[string]any{{"capability": "events", "state": true}}}
	for _, q := range []*qemu.Session{s, ds} {
		if err := q.Run(ctx, "migrate-set-capabilities", events, nil); err != nil {
			return err
		}
	}
	dmark := ds.EventMark()
	// QEMU caps migration at 128 MiB/s by default: lift it, the link is
	// the limit.
	if err := s.Run(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return err
	}
	p := l.Profile()
	pass := time.Duration(float64(st.RAMNonZero) * 8 / float64(p.Rate) * float64(time.Second))
	deadline := pass + migrateGrace

	mark := s.EventMark()
	settle()
	l.RestartTrace()
	t0 := time.Now()
	if err := s.Run(ctx, "migrate", map[string]any{"uri": "tcp:" + netip.AddrPortFrom(b.Addr, migratePort).String()}, nil); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	done := func(e qemu.Event) bool {
		if e.Name != "MIGRATION" {
			return false
		}
		switch e.String("status") {
		case "completed", "failed", "cancelled":
			return true
		}
		return false
	}
	forced, tStop := false, time.Time{}
	wctx, cancel := context.WithTimeout(ctx, deadline)
	ev, _, err := s.WaitEvent(wctx, mark, done)
	cancel()
	if err != nil && ctx.Err() == nil {
		// Not converged: pause the guest, as a user would, to finish.
		forced, tStop = true, time.Now()
		if err := s.Run(ctx, "stop", nil, nil); err != nil {
			return fmt.Errorf("pause the unconverged migration's guest: %w", err)
		}
		ev, _, err = s.WaitEvent(ctx, mark, done)
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	c.Wall = time.Since(t0)
	if status := ev.String("status"); status != "completed" {
		return fmt.Errorf("migration %s", status)
	}
	var info struct {
		TotalTime int64 `json:"total-time"`
		Downtime  int64 `json:"downtime"`
		RAM       struct {
			Transferred int64 `json:"transferred"`
			Duplicate   int64 `json:"duplicate"`
			Normal      int64 `json:"normal"`
			DirtySync   int64 `json:"dirty-sync-count"`
		} `json:"ram"`
	}
	if err := s.Run(ctx, "query-migrate", nil, &info); err != nil {
		return err
	}
	if forced {
		// QEMU leaves the destination paused when the source was: resume
		// it, as the user who paused the source would, once it has loaded
		// all (a cont before that is lost).
		if _, _, err := ds.WaitEvent(ctx, dmark, done); err != nil {
			return fmt.Errorf("migrated guest: %w", err)
		}
		if err := ds.Run(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("resume the migrated guest: %w", err)
		}
		info.Downtime = time.Since(tStop).Milliseconds()
	}
	// The destination runs the guest on: it ticks.
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = dst.WaitTick(tctx, src.LastTick()+1)
	cancel()
	if err != nil {
		var status struct {
			Status string `json:"status"`
		}
		serr := ds.Run(ctx, "query-status", nil, &status)
		lines := dst.Serial()
		return fmt.Errorf("migrated guest (status %q %v; serial ends %q): %w", status.Status, serr, lines[max(0, len(lines)-3):], err)
	}
	c.Note = fmt.Sprintf("QEMU: %d passes over RAM, %.1f MB of RAM sent, guest paused %d ms",
		info.RAM.DirtySync, float64(info.RAM.Transferred)/1e6, info.Downtime)
	if forced {
		c.Note += fmt.Sprintf(" (from the stop to the destination's cont); had not converged after %.0f s (one pass at the link rate + %s): guest paused to finish",
			deadline.Seconds(), migrateGrace)
	}
	return nil
}

// startIn starts the scenario's guest machine inside endpoint ep, on a copy
// of the new checkpoint's disk, with extra QEMU arguments.
func startIn(ctx context.Context, ep link.Endpoint, st *VMState, dir, name string, extra ...string) (*testguest.VM, error) {
	vmDir := filepath.Join(dir, name)
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		return nil, err
	}
	disk := filepath.Join(vmDir, "disk.raw")
	if err := copyFile(st.Disk2, disk); err != nil {
		return nil, err
	}
	// QEMU runs inside the namespace through a wrapper that execs it
	// there: the process testguest starts and watches is QEMU itself.
	qemu, err := qemuPath(st.Start.QEMU)
	if err != nil {
		return nil, err
	}
	wrap := filepath.Join(vmDir, "qemu")
	script := "#!/bin/sh\nexec ip netns exec " + shellQuote(ep.Namespace) + " " + shellQuote(qemu) + ` "$@"` + "\n"
	if err := os.WriteFile(wrap, []byte(script), 0o755); err != nil {
		return nil, err
	}
	opts := st.Start
	opts.Dir, opts.DiskPath, opts.QEMU = vmDir, disk, wrap
	opts.ExtraArgs = append(append([]string(nil), opts.ExtraArgs...), extra...)
	vm, err := testguest.Start(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("start the guest in %s: %w", ep.Namespace, err)
	}
	return vm, nil
}

// qemuPath finds the QEMU binary (testguest's default when name is empty).
func qemuPath(name string) (string, error) {
	if name == "" {
		name = testguest.DefaultQEMU
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w (install Debian's qemu-system-x86)", err)
	}
	return filepath.Abs(p)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// oops returns the lines of a guest's console that say why its kernel
// died, if it did, as " (kernel: …)".
func oops(lines []string) string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, "Kernel panic") || strings.Contains(l, "BUG:") || strings.Contains(l, "Oops") ||
			strings.Contains(l, "general protection") || strings.Contains(l, "RIP:") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " (kernel: " + strings.Join(out[:min(len(out), 6)], " / ") + ")"
}

// runAfterLoad waits until QEMU has loaded an incoming stream and makes the
// guest run if the stream left it paused.
func runAfterLoad(ctx context.Context, s *qemu.Session) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := s.Run(ctx, "query-status", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "running":
			return nil
		case "paused", "postmigrate", "prelaunch", "finish-migrate":
			return s.Run(ctx, "cont", nil, nil)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the stream did not load: %w", ctx.Err())
		case <-t.C:
		}
	}
}
