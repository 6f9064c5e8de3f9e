package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/resume"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// resumer resumes a handed-off set for the peers in allowed: the set's
// current version, with this node's resume settings (resume.* in the
// configuration: kernel, initrd, QEMU, network, user), detached so that
// the copy outlives serve; with resume.libvirt, as a libvirt domain named
// after the set (resume.connect, resume.persistent), its work directory
// under resume.libvirt-dir.
func (g *globals) resumer(store string, allowed []transport.ID) ntcsync.Resumer {
	return func(ctx context.Context, peer transport.ID, set string, version uint64) (ntcsync.Resumed, error) {
		if !slices.Contains(allowed, peer) {
			return ntcsync.Resumed{}, ntcsync.ErrResumeRefused
		}
		o := g.serveResumeOptions(store, set)
		network := resume.Network(cmp.Or(o.network, string(resume.NetworkOff)))
		if network != resume.NetworkOff && network != resume.NetworkOn {
			return ntcsync.Resumed{}, fmt.Errorf("resume.network %q: want off or on", o.network)
		}
		// The peer hands over what it ran: a copy may start here unless a
		// third node runs the set.
		nodes, err := repo.OpenExisting(store)
		if err != nil {
			return ntcsync.Resumed{}, err
		}
		rn, err := nodes.Runner(set)
		if err != nil {
			return ntcsync.Resumed{}, err
		}
		if rn != nil && rn.Node != "" && rn.Node != peer.String() && rn.Node != g.nodeName() {
			return ntcsync.Resumed{}, fmt.Errorf("%s runs at a third node, %s", set, rn.Node)
		}
		// Asked again (the hand-off is being run again after a failure):
		// the copy this node started from that version runs already.
		work := o.workdir
		running, pid := copyRunning(ctx, o)
		if cur, err := nodes.Head(set); err == nil && cur != nil && rn != nil && rn.Node == g.nodeName() && rn.Version == cur.Digest && running {
			return ntcsync.Resumed{PID: pid, Detail: fmt.Sprintf("%s (running already), work directory %s", copyName(o, pid), work)}, nil
		}
		// The copy this node ran before and handed over (its final
		// checkpoint travelled with the hand-off: handedOffMark), or a
		// start that never made its copy the set's guest here (serve was
		// killed while it started it: nothing ran), leaves its work
		// directory to the new one. A copy that ran here and was not
		// handed over keeps it: its writes may be nowhere else.
		ranHere := rn != nil && rn.Node == g.nodeName()
		if !running && (fileExists(filepath.Join(work, handedOffMark)) || !ranHere) {
			if err := os.RemoveAll(work); err != nil {
				return ntcsync.Resumed{}, fmt.Errorf("clear the work directory of the copy handed to %s: %w", peer, err)
			}
		}
		o.force = true
		if o.libvirt {
			d, cur, err := startLibvirtCopy(ctx, g, o, network)
			if err != nil {
				return ntcsync.Resumed{}, err
			}
			if cur.Version != version {
				d.Destroy(context.WithoutCancel(ctx))
				return ntcsync.Resumed{}, ntcsync.ErrNotCurrent
			}
			return ntcsync.Resumed{Detail: fmt.Sprintf("libvirt domain %s at %s, console %s; started in %s (disks %s, libvirt's restore %s)",
				d.Name, d.URI, d.SerialLog, d.Timings.Total.Round(time.Millisecond), d.Timings.DiskCopy.Round(time.Millisecond), d.Timings.Restore.Round(time.Millisecond))}, nil
		}
		vm, cur, err := startCopy(ctx, g, o, network)
		if err != nil {
			return ntcsync.Resumed{}, err
		}
		if cur.Version != version {
			vm.Kill()
			return ntcsync.Resumed{}, ntcsync.ErrNotCurrent
		}
		if err := vm.Release(); err != nil {
			vm.Kill()
			return ntcsync.Resumed{}, err
		}
		return ntcsync.Resumed{PID: vm.PID(), Detail: fmt.Sprintf("pid %d, QMP %s, console %s", vm.PID(), vm.Plan.QMP, vm.Plan.SerialLog)}, nil
	}
}

// serveResumeOptions are the options of a copy of set that serve resumes
// for a hand-off, from the configuration's resume.* settings.
func (g *globals) serveResumeOptions(store, set string) resumeOptions {
	return resumeOptions{store: store, name: set, detach: true, workdir: g.copyWorkDir(set),
		network: g.v.GetString("resume.network"), qemu: g.v.GetString("resume.qemu"),
		kernel: g.v.GetString("resume.kernel"), initrd: g.v.GetString("resume.initrd"),
		bios: g.v.GetString("resume.bios"), user: g.v.GetString("resume.user"),
		loadTimeout: g.v.GetDuration("resume.load-timeout"),
		libvirt:     g.v.GetBool("resume.libvirt"), connect: g.v.GetString("resume.connect"),
		persistent: g.v.GetBool("resume.persistent")}
}

// copyWorkDir is the work directory of the copy of set that serve resumes:
// $NTC_HOME/resume/SET, or resume.libvirt-dir/SET for a libvirt copy
// (libvirt's QEMU user must pass through its parents).
func (g *globals) copyWorkDir(set string) string {
	if dir := g.v.GetString("resume.libvirt-dir"); dir != "" && g.v.GetBool("resume.libvirt") {
		return filepath.Join(dir, set)
	}
	return filepath.Join(g.home(), "resume", set)
}

// copyRunning reports whether the copy o describes runs: a QEMU in its
// work directory (with its pid), or a running libvirt domain named after
// the set.
func copyRunning(ctx context.Context, o resumeOptions) (bool, int) {
	if !o.libvirt {
		pid, ok := resume.Running(o.workdir)
		return ok, pid
	}
	active, err := domainActive(ctx, o.connect, o.name)
	return err == nil && active, 0
}

func copyName(o resumeOptions, pid int) string {
	if o.libvirt {
		return "libvirt domain " + o.name
	}
	return fmt.Sprintf("pid %d", pid)
}

// domainActive reports whether libvirt at uri runs a domain named name.
func domainActive(ctx context.Context, uri, name string) (bool, error) {
	conn, err := capture.DialLibvirt(ctx, uri, 0)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	dom, err := conn.DomainLookupByName(name)
	if err != nil {
		return false, nil
	}
	active, err := conn.DomainIsActive(dom)
	return active != 0, err
}

// checkServeResume refuses resume settings that cannot work together,
// before serve starts, when it accepts hand-offs.
func (g *globals) checkServeResume(handoffs bool) error {
	if !handoffs {
		return nil
	}
	if !g.v.GetBool("resume.libvirt") {
		for _, k := range []string{"resume.connect", "resume.libvirt-dir"} {
			if g.v.GetString(k) != "" {
				return usagef("%s is set but resume.libvirt is not: set resume.libvirt: true to resume handed-off copies as libvirt domains", k)
			}
		}
		if g.v.GetBool("resume.persistent") {
			return usagef("resume.persistent is set but resume.libvirt is not: set resume.libvirt: true to resume handed-off copies as libvirt domains")
		}
		return nil
	}
	for _, k := range []string{"resume.qemu", "resume.user", "resume.bios"} {
		if g.v.GetString(k) != "" {
			return usagef("resume.libvirt: libvirt picks the QEMU binary, its user and firmware: %s does not apply", k)
		}
	}
	return nil
}
