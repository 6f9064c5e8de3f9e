package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/ntc-project/ntc/bench/link"
	"github.com/ntc-project/ntc/internal/testguest"
	"github.com/ntc-project/ntc/qemu"
)

// runHandoff measures the daily hand-off across the link as a user runs
// it: the scenario's guest runs inside A (restored from its new
// checkpoint), 'ntc replicate' keeps B's repository up to date, then 'ntc
// sync vm --to home --handoff' inside A pauses the guest for good, pushes
// the final checkpoint, has B's 'ntc serve --resume-allow' resume it and
// stops the original. Wall is the guest's downtime: from its pause in A to
// its copy running in B (what sync reports); RunMS sync's whole run.
func runHandoff(ctx context.Context, bin string, l *link.Link, sc *Scenario, dir string, c *Case) error {
	st := sc.VM
	if st == nil {
		return fmt.Errorf("%s is not a VM scenario", sc.Name)
	}
	// B resumes the guest with its own copy of the kernel it boots.
	g := st.Start.Guest
	if g == nil {
		var err error
		if g, err = testguest.Build(ctx, testguest.Options{}); err != nil {
			return err
		}
	}
	a, b := l.A(), l.B()
	src, err := startIn(ctx, a, st, dir, "src", "-incoming", "defer")
	if err != nil {
		return err
	}
	defer src.Close()
	s, err := qemu.Dial(ctx, src.QMPPath(), qemu.DialOptions{})
	if err != nil {
		return err
	}
	err = restoreRunning(ctx, s, src, st)
	s.Close() // QEMU serves one QMP client: ntc's from now on
	if err != nil {
		return err
	}

	office, err := NewNode(ctx, bin, filepath.Join(dir, "office"))
	if err != nil {
		return err
	}
	home, err := NewNode(ctx, bin, filepath.Join(dir, "home"))
	if err != nil {
		return err
	}
	officeRepo, homeRepo := filepath.Join(dir, "office-repo"), filepath.Join(dir, "home-repo")
	homeAddr := b.Addr.String() + ":7400"
	write := func(n *Node, body string) error {
		return os.WriteFile(filepath.Join(n.Home, "ntc.yaml"), []byte(body), 0o600)
	}
	if err := write(home, fmt.Sprintf("resume:\n  kernel: %s\n  initrd: %s\n", g.Kernel, g.Initrd)); err != nil {
		return err
	}
	if err := write(office, fmt.Sprintf("repo: %s\nvms:\n  vm:\n    qmp: %s\npeers:\n  home: {addr: %q, id: %s}\n",
		officeRepo, src.QMPPath(), homeAddr, home.ID)); err != nil {
		return err
	}
	srv, err := home.ServeFlags(ctx, homeAddr, homeRepo, office.ID, []string{"--resume-allow", office.ID}, b.Wrap()...)
	if err != nil {
		return err
	}
	defer srv.Stop()
	defer killQEMUsUnder(filepath.Join(home.Home, "resume"))

	// Continuous replication until B holds a version; sync then waits for
	// a checkpoint replicate is taking (QEMU serves one QMP client).
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	rep := office.CommandIn(rctx, a.Wrap(), "replicate", "--qmp", src.QMPPath(), "--out", officeRepo, "--name", "vm",
		"--to", homeAddr, "--peer", home.ID, "--every", "2s")
	var repErr bytes.Buffer
	rep.Stderr = &repErr
	if err := rep.Start(); err != nil {
		return err
	}
	defer func() { rcancel(); rep.Wait() }()
	if err := awaitFile(ctx, filepath.Join(homeRepo, "sets", "vm", "HEAD"), 5*time.Minute); err != nil {
		return fmt.Errorf("replicate: no version reached B: %w: %s", err, repErr.String())
	}

	t0 := time.Now()
	out, err := office.CommandIn(ctx, a.Wrap(), "--json", "sync", "vm", "--to", "home", "--handoff").Output()
	c.RunMS = time.Since(t0).Milliseconds()
	if err != nil {
		return fmt.Errorf("sync --handoff: %w: %s (serve: %s)", err, stderrOf(err), srv.Log())
	}
	var res struct {
		DowntimeMS float64 `json:"downtime_ms"`
		BytesSent  int64   `json:"bytes_sent"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("sync printed %q: %w", out, err)
	}
	c.Wall = time.Duration(res.DowntimeMS * float64(time.Millisecond))
	c.Note = fmt.Sprintf("guest down %.2f s (paused in A → running in B); sync ran %.2f s and sent %d bytes; replicate ran before it",
		res.DowntimeMS/1000, float64(c.RunMS)/1000, res.BytesSent)
	return nil
}

// restoreRunning loads the scenario's new checkpoint, through s, into the
// QEMU of vm started with -incoming defer and lets the guest run.
func restoreRunning(ctx context.Context, s *qemu.Session, vm *testguest.VM, st *VMState) error {
	if err := s.Run(ctx, "migrate-incoming", map[string]any{"uri": "exec:cat " + st.Stream2}, nil); err != nil {
		return fmt.Errorf("restore the checkpoint: %w", err)
	}
	// A background snapshot's stream records a stopped guest: QEMU loads
	// it and stays paused. Wait for the load to end, then let it run.
	if err := runAfterLoad(ctx, s); err != nil {
		return fmt.Errorf("restore the checkpoint: %w", err)
	}
	// The restored guest runs (and its busy loops with it) once it ticks.
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := vm.WaitTick(tctx, 1); err != nil {
		return fmt.Errorf("guest restored from checkpoint %d: %w%s", st.Seq2, err, oops(vm.Serial()))
	}
	return nil
}

// awaitFile waits until path exists. Nothing announces it: it is looked
// for every 100 ms.
func awaitFile(ctx context.Context, path string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// killQEMUsUnder kills the detached copies started in work directories
// under dir (their pid files).
func killQEMUsUnder(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*", "qemu.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
