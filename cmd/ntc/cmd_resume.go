package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/resume"
	ntcsync "github.com/ntc-project/ntc/sync"

	"github.com/ntc-project/ntc/qemu"
)

type resumeOptions struct {
	store       string
	name        string
	workdir     string
	network     string
	qemu        string
	kernel      string
	initrd      string
	bios        string
	user        string
	loadTimeout time.Duration
	detach      bool
	force       bool
	libvirt     bool
	connect     string
	persistent  bool
	version     uint64 // 0: the set's current version
}

func newResumeCommand(g *globals) *cobra.Command {
	var o resumeOptions
	cmd := &cobra.Command{
		Use:   "resume --store DIR --name SET",
		Short: "Continue a received checkpoint's guest here, where it was",
		Long: `Resume starts the guest of the checkpoint that set SET of the receiver's store
DIR holds now ('ntc push --checkpoint' sent it; 'ntc ls --store DIR' lists the
sets) and lets it continue from the checkpoint's instant: no reboot, its
programs carry on.

The checkpoint describes the source's machine as data (machine type, CPUs,
RAM, devices and their addresses, disks, NICs, serial ports); ntc checks that
description against an allowlist of drivers, properties and values, refusing
anything else before it starts anything, and builds QEMU's command line
itself. Nothing a checkpoint says is run or opened as a path: the QEMU binary
is --qemu (resume.qemu) or qemu-system-ARCH on PATH; disks, consoles and
sockets are made in the work directory (--workdir, default
$NTC_HOME/resume/SET, private: 0700): every disk gets a new qcow2 overlay
there on the received image, which QEMU only reads (a push to SET while the
copy runs replaces the files it uses instead of rewriting them), the serial
console goes to serial.log, and QMP to qmp.sock. A guest that booted a kernel
directly needs this machine's copy of it: --kernel PATH and --initrd PATH (or
resume.kernel and resume.initrd); one running its own firmware, --bios PATH.
QEMU runs under its seccomp sandbox where the build has one, and as --user
NAME when given.
QEMU starts paused with -incoming defer; ntc feeds it the migration stream
rebuilt from the received RAM pages, device state and stream description,
waits until QEMU has loaded it (at most --load-timeout), and lets the guest
run.

The copy's network links are down (set_link) before it runs, so that it
cannot clash with the original on the network; --network on keeps them as
the source had them. A source with a vmgenid device gets a new generation
ID: the guest can tell it is a copy.

If the checkpoint does not fit the QEMU started for it (another machine type,
RAM size or devices), QEMU refuses the stream and exits: ntc says what QEMU
said, and nothing is left running. Neither is anything left if ntc fails or
is killed before the copy runs.

ntc stays in the foreground while the copy runs: Ctrl-C (or SIGTERM) stops
the copy cleanly (QMP quit). With --detach it leaves the copy running, once
it runs, and prints how to stop it. With --json it prints one JSON line when the copy runs
(its pid, QMP socket, serial log, pid file, timings) and, in the foreground,
one more when it has stopped.

Examples:
  ntc resume --store ~/vms --name office-vm --kernel /boot/vmlinuz --initrd /boot/initrd.img
  ntc resume --store ~/vms --name office-vm --detach --workdir /var/lib/ntc/office-vm
  ntc resume --store ~/vms --name office-vm --network on --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.store = g.v.GetString("resume.store")
			o.name = g.v.GetString("resume.name")
			o.workdir = g.v.GetString("resume.workdir")
			o.network = g.v.GetString("resume.network")
			o.qemu = g.v.GetString("resume.qemu")
			o.kernel = g.v.GetString("resume.kernel")
			o.initrd = g.v.GetString("resume.initrd")
			o.bios = g.v.GetString("resume.bios")
			o.user = g.v.GetString("resume.user")
			o.loadTimeout = g.v.GetDuration("resume.load-timeout")
			return runResume(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.String("store", "", "the receiver's repository directory (ntc serve --store), or s3://BUCKET/PREFIX")
	f.String("name", "", "the set to resume (the checkpoint repository's name when pushed)")
	f.String("workdir", "", "where the copy's disk overlays, sockets and logs go (default: $NTC_HOME/resume/SET; NTC_HOME defaults to ~/.local/state/ntc)")
	f.String("network", string(resume.NetworkOff), "the copy's network links: off (set down before it runs) or on")
	f.String("qemu", "", "QEMU binary (default: qemu-system-ARCH of the source's target, on PATH)")
	f.String("kernel", "", "this machine's kernel, for a guest that booted one directly (-kernel)")
	f.String("initrd", "", "this machine's initrd, for a guest that booted with one")
	f.String("bios", "", "this machine's firmware, for a guest that ran its own -bios")
	f.String("user", "", "run QEMU as this user (ntc runs as root); the work directory becomes theirs, and its parents and --kernel/--initrd must be open to them")
	f.Duration("load-timeout", resume.DefaultLoadTimeout, "how long QEMU may take to load the migration stream before ntc gives up and stops it")
	f.BoolVar(&o.detach, "detach", false, "leave the copy running and exit (default: stay until Ctrl-C, then stop it)")
	f.BoolVar(&o.force, "force", false, "resume even though another node runs the set (two copies would run)")
	f.BoolVar(&o.libvirt, "libvirt", false, "run the copy as a libvirt domain named SET (virsh list shows it) and exit; --workdir must be reachable by libvirt's QEMU user")
	f.StringVar(&o.connect, "connect", "", "the libvirt connection for --libvirt (default qemu:///system)")
	f.Uint64Var(&o.version, "version", 0, "resume this version of the set (ntc ls lists them; default: the current one)")
	f.BoolVar(&o.persistent, "persistent", false, "with --libvirt: also define the copy in libvirt, so that it outlives a shutdown")
	g.bind(cmd, "resume.store", "store")
	addS3EndpointFlag(g, cmd)
	g.bind(cmd, "resume.name", "name")
	g.bind(cmd, "resume.workdir", "workdir")
	g.bind(cmd, "resume.network", "network")
	g.bind(cmd, "resume.qemu", "qemu")
	g.bind(cmd, "resume.kernel", "kernel")
	g.bind(cmd, "resume.initrd", "initrd")
	g.bind(cmd, "resume.bios", "bios")
	g.bind(cmd, "resume.user", "user")
	g.bind(cmd, "resume.load-timeout", "load-timeout")
	return cmd
}

// The keeper of a detached copy (resume.RunKeeper) is ntc re-executed with
// resume.KeeperArg. Its parent-death signal lives on its main thread,
// where it must be cleared: keep main on it.
func init() {
	if len(os.Args) > 1 && os.Args[1] == resume.KeeperArg {
		runtime.LockOSThread()
	}
}

func newKeeperCommand() *cobra.Command {
	return &cobra.Command{
		Use:                resume.KeeperArg,
		Hidden:             true,
		DisableFlagParsing: true,
		Run: func(cmd *cobra.Command, args []string) {
			os.Exit(resume.RunKeeper(args))
		},
	}
}

// resumeJSON is what resume --json prints when the copy runs ("running"),
// and when it has stopped ("stopped").
type resumeJSON struct {
	Event       string            `json:"event"`
	Set         string            `json:"set"`
	Version     uint64            `json:"version"`
	Checkpoint  int               `json:"checkpoint"`
	Machine     string            `json:"machine"`
	PID         int               `json:"pid"`
	WorkDir     string            `json:"workdir"`
	QMP         string            `json:"qmp"`
	SerialLog   string            `json:"serial_log,omitempty"`
	Log         string            `json:"qemu_log"`
	PIDFile     string            `json:"pidfile"`
	Network     string            `json:"network"`
	LinksDown   []string          `json:"links_down,omitempty"`
	GenID       bool              `json:"new_generation_id"`
	Disks       []resume.DiskPlan `json:"disks"`
	ResumeMS    float64           `json:"resume_ms"`
	LaunchMS    float64           `json:"launch_ms"`
	MigrateMS   float64           `json:"migrate_ms"`
	StreamBytes int64             `json:"stream_bytes"`
	Detached    bool              `json:"detached"`
	Sandboxed   bool              `json:"sandboxed"`
	Notes       []string          `json:"notes,omitempty"`
}

func runResume(ctx context.Context, g *globals, o resumeOptions) error {
	t0 := time.Now()
	if o.store == "" {
		return usagef("--store DIR is required: the receiver's repository (ntc serve --store)")
	}
	if o.name == "" {
		return usagef("--name SET is required: the set to resume ('ntc ls --store %s' lists them)", o.store)
	}
	if err := ntcsync.CheckName(o.name); err != nil {
		return usagef("--name %q: %v", o.name, err)
	}
	network := resume.Network(o.network)
	if network != resume.NetworkOff && network != resume.NetworkOn {
		return usagef("--network %q: want off or on", o.network)
	}
	if o.libvirt {
		return resumeLibvirt(ctx, g, o, network)
	}
	vm, cur, err := startCopy(ctx, g, o, network)
	if err != nil {
		return err
	}
	total := time.Since(t0)
	p := vm.Plan
	out := resumeJSON{
		Event: "running", Set: o.name, Version: cur.Version, Checkpoint: vm.Manifest.Seq, Machine: vm.Manifest.Machine.Type,
		PID: vm.PID(), WorkDir: filepath.Dir(p.Control), QMP: p.QMP, SerialLog: p.SerialLog, Log: p.Log, PIDFile: p.PIDFile,
		Network: string(network), GenID: p.GenID, Disks: p.Disks, ResumeMS: ms(total),
		LaunchMS: ms(vm.Timings.Launch), MigrateMS: ms(vm.Timings.Migrate), StreamBytes: vm.Timings.StreamBytes, Detached: o.detach,
		Sandboxed: p.Sandbox, Notes: p.Notes,
	}
	if network == resume.NetworkOff {
		out.LinksDown = p.NICs
	}
	if g.json {
		if err := writeJSONLine(g.stdout, out); err != nil {
			vm.Kill()
			return err
		}
	} else {
		printResumed(g, out, vm.Manifest.Machine.RAM.Size)
	}
	if o.detach {
		return vm.Release()
	}
	select {
	case <-vm.Exited():
		if err := vm.ExitErr(); err != nil {
			return fmt.Errorf("the copy's QEMU exited: %w; see %s", err, p.Log)
		}
		if !g.json {
			fmt.Fprintln(g.stdout, "the copy's QEMU exited (the guest shut down)")
		}
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := vm.Stop(sctx); err != nil {
			return err
		}
		if !g.json {
			fmt.Fprintf(g.stdout, "stopped the copy; its disk writes stay in %s\n", out.WorkDir)
		}
	}
	if g.json {
		return writeJSONLine(g.stdout, map[string]string{"event": "stopped", "set": o.name, "workdir": out.WorkDir})
	}
	return nil
}

func printResumed(g *globals, o resumeJSON, ram int64) {
	w := g.stdout
	fmt.Fprintf(w, "resumed %s (version %d, checkpoint %d: %s, %s RAM) in %.2f s: the guest runs as pid %d\n",
		o.Set, o.Version, o.Checkpoint, o.Machine, humanBytes(ram), o.ResumeMS/1000, o.PID)
	fmt.Fprintf(w, "  QEMU started in %.0f ms, loaded the %s migration stream in %.0f ms\n", o.LaunchMS, humanBytes(o.StreamBytes), o.MigrateMS)
	for _, d := range o.Disks {
		fmt.Fprintf(w, "  disk %s: writes go to %s (on %s, left as received)\n", d.Device, d.Overlay, d.Image)
	}
	switch {
	case len(o.LinksDown) > 0:
		fmt.Fprintf(w, "  network: link down on %s (--network on keeps it up)\n", strings.Join(o.LinksDown, ", "))
	case o.Network == string(resume.NetworkOn):
		fmt.Fprintln(w, "  network: as the source had it")
	}
	if o.GenID {
		fmt.Fprintln(w, "  vmgenid: a new generation ID tells the guest it is a copy")
	}
	if !o.Sandboxed {
		fmt.Fprintln(w, "  note: this QEMU has no seccomp sandbox (-sandbox): it runs unconfined")
	}
	for _, n := range o.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if o.SerialLog != "" {
		fmt.Fprintf(w, "  serial console: %s (tail -f it)\n", o.SerialLog)
	}
	fmt.Fprintf(w, "  QMP: %s   QEMU's log: %s\n", o.QMP, o.Log)
	if o.Detached {
		fmt.Fprintf(w, "left running: stop it with   kill $(cat %s)   (QEMU exits cleanly on SIGTERM)\n", o.PIDFile)
	} else {
		fmt.Fprintln(w, "Ctrl-C stops the copy (--detach leaves it running)")
	}
}

// versionManifest returns the checkpoint manifest version v of set carries
// as its metadata, or nil when it has none (a version an older ntc pushed
// carries it as the image manifest.json, which resume reads).
func versionManifest(r *ntcsync.Repo, set string, v uint64) (*capture.Manifest, error) {
	meta, err := r.Meta(set, v)
	if err != nil || len(meta) == 0 {
		return nil, err
	}
	m, err := capture.DecodeManifest(meta)
	if err != nil {
		return nil, fmt.Errorf("version %d of %s: %w", v, set, err)
	}
	m.Seq = int(v)
	return m, nil
}

// receivedManifest is versionManifest of set's current version.
func receivedManifest(r *ntcsync.Repo, set string) (*capture.Manifest, error) {
	cur, err := r.Current(set)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, fmt.Errorf("no version of %s received", set)
	}
	return versionManifest(r, set, cur.Version)
}

// startCopy starts the current version of set o.name of the repository
// o.store as a running copy, and makes it the set's guest here
// (capture.Adopt), unless another node runs the set (without o.force).
func startCopy(ctx context.Context, g *globals, o resumeOptions, network resume.Network) (*resume.VM, *ntcsync.Manifest, error) {
	src, err := copySource(ctx, g, o)
	if err != nil {
		return nil, nil, err
	}
	defer src.close()
	cur := src.cur
	self := g.nodeName()
	cfg := resume.Config{Images: src.images, Manifest: src.manifest, WorkDir: src.work, Network: network, QEMU: o.qemu, Detach: o.detach,
		Kernel: o.kernel, Initrd: o.initrd, Firmware: o.bios, User: o.user, LoadTimeout: o.loadTimeout}
	if o.detach {
		exe, err := os.Executable()
		if err != nil {
			return nil, nil, fmt.Errorf("resume --detach: find ntc's own binary for the copy's keeper: %w", err)
		}
		cfg.Keeper = []string{exe, resume.KeeperArg}
	}
	vm, err := resume.Start(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	// A push that landed meanwhile may have changed what was read.
	if err := src.stillHeld(); err != nil {
		vm.Kill()
		return nil, nil, fmt.Errorf("%w; the copy was stopped: run resume again", err)
	}
	// The copy continues the set: its checkpoints into this repository
	// follow the version it was resumed from and read only what it wrote.
	if err := adopt(ctx, vm.Session(), o.store, o.name, int(cur.Version), self); err != nil {
		fmt.Fprintf(g.stderr, "ntc: %v: the copy's first checkpoint will read its disks in full\n", err)
	}
	return vm, cur, nil
}

// copyFrom is what a copy of a set resumes from: a version, the directory
// of its image files, its checkpoint manifest, and the copy's work
// directory. Its repository stays open until close, for stillHeld.
type copyFrom struct {
	set      string
	cur      *ntcsync.Manifest
	images   string
	manifest *capture.Manifest
	work     string
	repo     *ntcsync.Repo
	close    func() error
}

// stillHeld checks that the image files hold the version still: a push
// that lands while the copy starts moves them (sync.Repo.ImagesHold).
func (c *copyFrom) stillHeld() error {
	if c.repo.ImagesHold(c.set, c.cur.Version) {
		return nil
	}
	return fmt.Errorf("the images in %s do not hold version %d of %s: a push is updating them: wait for it to finish", c.images, c.cur.Version, c.set)
}

// copySource finds what a copy of set o.name resumes from: the current
// version (or o.version), its images and manifest, and the work
// directory; it refuses a set another node runs (unless o.force). The
// caller closes it.
func copySource(ctx context.Context, g *globals, o resumeOptions) (_ *copyFrom, err error) {
	repo, closeRepo, err := g.openResumeRepo(ctx, o.store, o.name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeRepo()
		}
	}()
	cur, err := repo.Current(o.name)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, fmt.Errorf("%s holds no set %q: 'ntc ls --store %s' lists what was received", o.store, o.name, o.store)
	}
	if o.version != 0 && o.version != cur.Version {
		if cur, err = repo.Manifest(o.name, o.version); err != nil {
			return nil, fmt.Errorf("version %d of %s: %w ('ntc ls --store %s' lists the versions)", o.version, o.name, err, o.store)
		}
	}
	self := g.nodeName()
	if rn, err := runnerOf(repo, o.name); err != nil {
		return nil, err
	} else if rn != nil && rn.Node != "" && rn.Node != self && !o.force {
		return nil, fmt.Errorf("%s runs at node %s (since %s, from version %s): a copy here would run beside it; "+
			"stop it there, or hand it over with 'ntc sync %s --to ... --handoff' from there; --force resumes here anyway",
			o.name, rn.Node, rn.Since.Format(time.RFC3339), rn.Version.Short(), o.name)
	}
	if err := g.materializeFor(ctx, repo, o.store, o.name, cur.Version); err != nil {
		return nil, err
	}
	c := &copyFrom{set: o.name, cur: cur, images: filepath.Dir(repo.ImagePath(o.name, resume.ManifestImage)),
		work: o.workdir, repo: repo, close: closeRepo}
	if err := c.stillHeld(); err != nil {
		return nil, err
	}
	if c.work == "" {
		c.work = filepath.Join(g.home(), "resume", o.name)
	}
	if c.manifest, err = versionManifest(repo, o.name, cur.Version); err != nil {
		return nil, err
	}
	return c, nil
}

// resumeLibvirt runs the copy as a libvirt domain named after the set
// (resume.StartLibvirt) and leaves it to libvirt.
func resumeLibvirt(ctx context.Context, g *globals, o resumeOptions, network resume.Network) error {
	if o.qemu != "" || o.user != "" || o.bios != "" || o.detach {
		return usagef("--libvirt: libvirt picks the QEMU binary and its user, and the domain outlives ntc: --qemu, --user, --bios and --detach do not apply")
	}
	d, _, err := startLibvirtCopy(ctx, g, o, network)
	if err != nil {
		return err
	}
	if g.json {
		return writeJSONLine(g.stdout, d)
	}
	fmt.Fprintf(g.stdout, "resumed %s as libvirt domain %s at %s in %.2f s (links down: %s); serial console %s; virsh -c %s destroy %s stops it\n",
		o.name, d.Name, d.URI, d.Timings.Total.Seconds(), strings.Join(d.LinksDown, ", "), d.Console, d.URI, d.Name)
	return nil
}

// startLibvirtCopy is startCopy for a copy run as a libvirt domain named
// after the set (resume.StartLibvirt), left to libvirt.
func startLibvirtCopy(ctx context.Context, g *globals, o resumeOptions, network resume.Network) (*resume.LibvirtDomain, *ntcsync.Manifest, error) {
	src, err := copySource(ctx, g, o)
	if err != nil {
		return nil, nil, err
	}
	defer src.close()
	cur := src.cur
	d, err := resume.StartLibvirt(ctx, resume.LibvirtConfig{Images: src.images, Manifest: src.manifest, WorkDir: src.work, Name: o.name,
		Connect: o.connect, Network: network, Kernel: o.kernel, Initrd: o.initrd, Persistent: o.persistent, LoadTimeout: o.loadTimeout})
	if err != nil {
		return nil, nil, err
	}
	// A push that landed meanwhile may have changed what was read.
	if err := src.stillHeld(); err != nil {
		d.Destroy(context.WithoutCancel(ctx))
		return nil, nil, fmt.Errorf("%w; the copy was stopped: run resume again", err)
	}
	// As for a plain copy (startCopy): the copy continues the set here.
	sess, err := capture.DialDomain(ctx, d.URI, d.Name, qemu.DialOptions{})
	if err == nil {
		err = adopt(ctx, sess, o.store, o.name, int(cur.Version), g.nodeName())
		sess.Close()
	}
	if err != nil {
		fmt.Fprintf(g.stderr, "ntc: %v: the copy's first checkpoint will read its disks in full\n", err)
	}
	return d, cur, nil
}
