package resume

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/internal/procstat"

	"github.com/ntc-project/ntc/qemu"
)

// Network says what happens to the copy's network links.
type Network string

const (
	// NetworkOff sets every NIC's link down after the incoming migration,
	// before the guest runs, and gives the NICs user-mode backends that
	// reach nothing (restrict=on): the copy cannot clash with the original.
	NetworkOff Network = "off"
	// NetworkOn leaves the links up, on user-mode (NAT) backends.
	NetworkOn Network = "on"
)

// ManifestImage is the image that carries a checkpoint's manifest when it
// travels (ntc push --checkpoint).
const ManifestImage = "manifest.json"

// Config says which checkpoint to resume and where.
type Config struct {
	// Images is the directory holding the checkpoint's images as files
	// (a receiver's STORE/sets/SET/images): manifest.json, the disks
	// (raw), the RAM blocks, "device" and "stream". They are only read,
	// and only inside the directory.
	Images string
	// WorkDir gets the disk overlays, sockets, serial console and QEMU's
	// log (0700). Created if needed; it must not hold an earlier resume's
	// disks.
	WorkDir string
	// Network: NetworkOff (the default, "") or NetworkOn.
	Network Network
	// QEMU is the binary to run; empty: qemu-system-ARCH (the source's
	// target) on PATH. Never a program the checkpoint names.
	QEMU string
	// Kernel, Initrd and Firmware are this machine's files for a guest
	// that booted a kernel directly or ran its own -bios: the checkpoint
	// only says which files the source loaded.
	Kernel, Initrd, Firmware string
	// User, when set, runs QEMU as that user (the work directory and its
	// files are handed to it; the received images reach QEMU as open
	// descriptors; the work directory's parents must let the user through
	// and the kernel must be readable by it).
	User string
	// LoadTimeout bounds the incoming migration; 0: DefaultLoadTimeout.
	LoadTimeout time.Duration
	// Detach lets QEMU outlive this process once Release is called; until
	// then it is killed when the process dies, like a copy without Detach.
	// It needs Keeper.
	Detach bool
	// Keeper is the command line of the keeper (ntc re-executed with
	// KeeperArg): the process between ntc and a detachable QEMU.
	Keeper []string
	// Manifest overrides Images/manifest.json.
	Manifest *capture.Manifest
}

// DefaultLoadTimeout bounds the incoming migration when Config says
// nothing: QEMU loads several hundred MB/s here, so it leaves room for
// guests of tens of GiB on a busy machine.
const DefaultLoadTimeout = 10 * time.Minute

// Sentinel errors.
var (
	// ErrWorkDirInUse: the work directory holds an earlier resume's disks.
	ErrWorkDirInUse = errors.New("work directory in use")
	// ErrIncompatible: the checkpoint cannot be resumed by this QEMU here.
	ErrIncompatible = errors.New("checkpoint does not fit the QEMU started for it")
	// ErrLoadTimeout: the migration stream did not load in time.
	ErrLoadTimeout = errors.New("the migration stream did not load in time")
	// ErrNoCheckpoint: the images directory holds no checkpoint manifest.
	ErrNoCheckpoint = errors.New("no checkpoint")
	// ErrNoQEMU: no QEMU for the checkpoint's target is installed.
	ErrNoQEMU = errors.New("no QEMU for the checkpoint's target")
	// ErrWorkDirTooLong: a socket in the work directory would have a
	// longer path than a unix socket allows (107 bytes).
	ErrWorkDirTooLong = errors.New("work directory path too long for its sockets")
	// ErrNeedKernel, ErrNeedInitrd, ErrNeedFirmware: the source booted a
	// kernel, initrd or firmware of its own, and the receiver has to give
	// its copy (Config.Kernel, Initrd, Firmware).
	ErrNeedKernel   = errors.New("the receiver's copy of the guest's kernel is needed")
	ErrNeedInitrd   = errors.New("the receiver's copy of the guest's initrd is needed")
	ErrNeedFirmware = errors.New("the receiver's copy of the guest's firmware is needed")
)

// ExitError says that QEMU exited while the copy was being started (the
// incoming migration failed: QEMU exits then) and carries what it said.
type ExitError struct {
	Stage  string // what was under way: "start", "incoming migration", …
	Status string // the exit status
	Stderr string // the end of QEMU's output
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("QEMU exited during the %s (%s)", e.Stage, e.Status)
	if e.Stage == "incoming migration" {
		msg += ": the checkpoint's machine does not match the QEMU started for it"
	}
	if e.Stderr != "" {
		msg += "; QEMU said: " + e.Stderr
	}
	return msg
}

// Is makes an ExitError during the migration an ErrIncompatible.
func (e *ExitError) Is(target error) bool {
	return target == ErrIncompatible && e.Stage == "incoming migration"
}

// Timings is where the time of a resume went.
type Timings struct {
	Total   time.Duration `json:"total"`   // Start called → guest running
	Prepare time.Duration `json:"prepare"` // reading the checkpoint, overlays
	Launch  time.Duration `json:"launch"`  // QEMU started → QMP answers
	Migrate time.Duration `json:"migrate"` // migrate-incoming → completed
	// StreamBytes is the migration stream fed to QEMU.
	StreamBytes int64 `json:"stream_bytes"`
}

// VM is a running copy.
type VM struct {
	Plan     *Plan
	Manifest *capture.Manifest
	Timings  Timings

	proc *process
	ctl  *qemu.Session
	done chan struct{} // closed once QEMU is reaped
}

// Start resumes the checkpoint in cfg.Images: it checks the checkpoint's
// machine description against the allowlist and builds QEMU's command line
// from it (plan), starts QEMU paused (-incoming defer) with each disk on a
// new overlay in cfg.WorkDir, feeds it the migration stream rebuilt from
// the images, waits for the migration to complete (at most
// cfg.LoadTimeout), sets the NIC links down (unless NetworkOn) and lets the
// guest run. A description outside the allowlist is refused (ErrRefused)
// before anything runs. On error nothing it started is left running. The
// returned VM outlives ctx, which bounds only the start.
func Start(ctx context.Context, cfg Config) (vm *VM, err error) {
	t0 := time.Now()
	if cfg.Detach && len(cfg.Keeper) == 0 {
		return nil, errors.New("resume: a detached copy needs a keeper process (Config.Keeper)")
	}
	c, err := openCheckpoint(cfg.Network, cfg.WorkDir, cfg.Images, cfg.Manifest)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m := c.m
	h := host{images: c.images, work: c.work, network: c.network, digest: fileDigest, hugePages: c.hugePages}
	if h.qemu, err = qemuBinary(cfg.QEMU, m.Machine.Arch); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	for _, f := range []struct {
		flag, path string
		dst        *string
	}{{"--kernel", cfg.Kernel, &h.kernel}, {"--initrd", cfg.Initrd, &h.initrd}, {"--bios", cfg.Firmware, &h.firmware}} {
		if f.path == "" {
			continue
		}
		if *f.dst, err = filepath.Abs(f.path); err == nil {
			_, err = os.Stat(*f.dst)
		}
		if err != nil {
			return nil, fmt.Errorf("resume: %s: %w", f.flag, err)
		}
	}
	h.sandbox = sandboxSupported(ctx, h.qemu)
	var cred *syscall.Credential
	if cfg.User != "" {
		if cred, err = lookupUser(cfg.User); err != nil {
			return nil, fmt.Errorf("resume: user %s: %w", cfg.User, err)
		}
	}
	p, err := plan(m, h)
	if err != nil {
		return nil, fmt.Errorf("resume checkpoint %d: %w", m.Seq, err)
	}
	if err := prepareWorkDir(ctx, p, cred); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			for _, d := range p.Disks {
				os.Remove(d.Overlay)
			}
		}
	}()
	v := &VM{Plan: p, Manifest: m}
	v.Timings.Prepare = time.Since(t0)

	t1 := time.Now()
	keeper := cfg.Keeper
	if !cfg.Detach {
		keeper = nil
	}
	if v.proc, err = start(p, c.disks, cred, keeper); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	v.done = v.proc.done
	defer func() {
		if err != nil {
			v.Kill()
		}
	}()
	vm = v
	// The deadline covers QEMU's start too: a QEMU that never answers is
	// as stuck as a stream that never loads.
	limit := cmp.Or(cfg.LoadTimeout, DefaultLoadTimeout)
	lctx, cancel := context.WithTimeoutCause(ctx, limit, ErrLoadTimeout)
	defer cancel()
	if vm.ctl, err = vm.dial(lctx); err == nil {
		vm.Timings.Launch = time.Since(t1)
		t2 := time.Now()
		vm.Timings.StreamBytes, err = vm.migrate(lctx, c.stream, c.src)
		vm.Timings.Migrate = time.Since(t2)
	}
	if err != nil {
		if errors.Is(context.Cause(lctx), ErrLoadTimeout) && ctx.Err() == nil {
			return nil, fmt.Errorf("resume: QEMU had not loaded the migration stream after %s (%d bytes of it fed), so it was stopped: %w",
				limit, vm.Timings.StreamBytes, ErrLoadTimeout)
		}
		return nil, err
	}
	if c.network == NetworkOff {
		for _, nic := range p.NICs {
			if err := vm.ctl.Run(ctx, "set_link", map[string]any{"name": nic, "up": false}, nil); err != nil {
				return nil, vm.failed("setting the links down", fmt.Errorf("set link %s down: %w", nic, err))
			}
		}
	}
	if err := vm.ctl.Run(ctx, "cont", nil, nil); err != nil {
		return nil, vm.failed("start of the guest", fmt.Errorf("cont: %w", err))
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := vm.ctl.Run(ctx, "query-status", nil, &st); err != nil {
		return nil, vm.failed("start of the guest", err)
	}
	if !st.Running {
		return nil, fmt.Errorf("resume: the guest is %s after cont, not running", st.Status)
	}
	vm.Timings.Total = time.Since(t0)
	return vm, nil
}

// checkpoint is what both ways of resuming (Start, StartLibvirt) begin
// with: the checked configuration, the manifest validate accepted, and
// the checkpoint's images open.
type checkpoint struct {
	network   Network // NetworkOff or NetworkOn
	work      string  // the work directory, absolute
	images    string  // the images directory, absolute
	m         *capture.Manifest
	stream    *migstream.Stream
	src       *fileSource
	disks     []*os.File // the disk images, in m.Disks's order
	hugePages bool       // the RAM's size of 2 MiB pages is free here
}

// openCheckpoint checks network ("" is NetworkOff) and the work
// directory's name, reads the manifest among the images (or checks m,
// when given) and refuses a description validate does not accept before
// anything runs, then opens the images (openImages). Close releases them.
func openCheckpoint(network Network, workDir, images string, m *capture.Manifest) (*checkpoint, error) {
	c := &checkpoint{network: cmp.Or(network, NetworkOff)}
	if c.network != NetworkOff && c.network != NetworkOn {
		return nil, fmt.Errorf("resume: network %q: want %s or %s", network, NetworkOff, NetworkOn)
	}
	if workDir == "" {
		return nil, errors.New("resume: no work directory")
	}
	var err error
	if c.work, err = filepath.Abs(workDir); err != nil {
		return nil, fmt.Errorf("resume: work directory %q: %w", workDir, err)
	}
	if c.images, err = filepath.Abs(images); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	root, err := os.OpenRoot(c.images)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	defer root.Close()
	if c.m, err = validManifest(root, m); err != nil {
		return nil, err
	}
	if c.stream, c.src, c.disks, err = openImages(root, c.m); err != nil {
		return nil, err
	}
	ram := c.m.Machine.RAM.Size
	c.hugePages = procstat.HugePagesFree() >= ram && ram%(2<<20) == 0
	return c, nil
}

// Close closes the checkpoint's images.
func (c *checkpoint) Close() {
	c.src.Close()
	closeAll(c.disks)
}

// validManifest returns m (checked), or else the manifest among the
// images in root, once validate has accepted its description.
func validManifest(root *os.Root, m *capture.Manifest) (*capture.Manifest, error) {
	var err error
	if m == nil {
		if m, err = readManifest(root); err != nil {
			return nil, err
		}
	} else if err := m.Check(); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	if _, err := validate(m); err != nil {
		return nil, fmt.Errorf("resume checkpoint %d: %w", m.Seq, err)
	}
	return m, nil
}

// ReadManifest reads the checkpoint manifest among the images in dir: a
// file of at most capture.MaxManifestBytes inside dir, whose names and
// sizes capture.DecodeManifest checks.
func ReadManifest(dir string) (*capture.Manifest, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	defer root.Close()
	return readManifest(root)
}

func readManifest(root *os.Root) (*capture.Manifest, error) {
	m, err := capture.ReadManifestFile(root, ManifestImage)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("resume: %s: %w: read its manifest: %w", root.Name(), ErrNoCheckpoint, err)
	}
	if err != nil {
		return nil, fmt.Errorf("resume: %s: %w", root.Name(), err)
	}
	return m, nil
}

// fileSource serves the RAM page images from the image files.
type fileSource struct {
	files map[string]*os.File // by RAM block name
}

func (s *fileSource) Block(name string, length int64) (io.ReaderAt, error) {
	f, ok := s.files[name]
	if !ok {
		return nil, fmt.Errorf("the checkpoint has no image of RAM block %q", name)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < length {
		return nil, fmt.Errorf("RAM image %s holds %d bytes, the block %d", f.Name(), fi.Size(), length)
	}
	return f, nil
}

func (s *fileSource) Close() error {
	for _, f := range s.files {
		f.Close()
	}
	return nil
}

var _ migstream.Source = (*fileSource)(nil)

// openImages reads the stream description and the device state (each
// bounded by what the manifest declares and by capture's limits), and opens
// the disk and RAM images, every one a regular file inside root of the
// size the manifest says.
func openImages(root *os.Root, m *capture.Manifest) (*migstream.Stream, *fileSource, []*os.File, error) {
	if m.Stream.Format != capture.StreamFormat {
		return nil, nil, nil, fmt.Errorf("resume checkpoint %d: stream format %q, this ntc reads %q", m.Seq, m.Stream.Format, capture.StreamFormat)
	}
	meta, err := capture.ReadFileBounded(root, imageName(m.Stream.Index), m.Stream.Size, capture.MaxStreamDescriptionBytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("resume: stream description: %w", err)
	}
	s, err := capture.DecodeStreamDescription(meta)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("resume checkpoint %d: %w", m.Seq, err)
	}
	if s.Devices, err = capture.ReadFileBounded(root, imageName(m.DeviceState.Index), m.DeviceState.Size, capture.MaxDeviceStateBytes); err != nil {
		return nil, nil, nil, fmt.Errorf("resume: device state: %w", err)
	}
	var disks []*os.File
	for _, d := range m.Disks {
		f, err := capture.OpenRegular(root, imageName(d.Index))
		if err == nil {
			var fi os.FileInfo
			if fi, err = f.Stat(); err == nil && fi.Size() != d.Size {
				err = fmt.Errorf("%s holds %d bytes, the manifest says %d", imageName(d.Index), fi.Size(), d.Size)
			}
			if err != nil {
				f.Close()
			}
		}
		if err != nil {
			closeAll(disks)
			return nil, nil, nil, fmt.Errorf("resume: disk %s: %w", d.Device, err)
		}
		disks = append(disks, f)
	}
	src := &fileSource{files: map[string]*os.File{}}
	for _, b := range m.RAM {
		f, err := capture.OpenRegular(root, imageName(b.Index))
		if err != nil {
			src.Close()
			closeAll(disks)
			return nil, nil, nil, fmt.Errorf("resume: RAM block %s: %w", b.Name, err)
		}
		src.files[b.Name] = f
	}
	return s, src, disks, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// imageName is the receiver's name of the image an index file describes.
func imageName(index string) string { return strings.TrimSuffix(index, ".idx") }

// prepareWorkDir creates the work directory (0700), the disk overlays
// and the files QEMU writes (0600; handed to cred's user when set). A
// directory that holds an overlay already belongs to an earlier copy,
// whose disk writes are there: it is refused. qemu-img only ever gets
// paths ntc built: the overlay in the work directory and, recorded in it
// without being opened (-u), the received image it covers.
func prepareWorkDir(ctx context.Context, p *Plan, cred *syscall.Credential) error {
	work := filepath.Dir(p.Control)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := os.Chmod(work, 0o700); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	own := func(path string) error {
		if cred == nil {
			return nil
		}
		return os.Lchown(path, int(cred.Uid), int(cred.Gid))
	}
	if err := own(work); err != nil {
		return fmt.Errorf("resume: hand the work directory to the QEMU user: %w", err)
	}
	for _, d := range p.Disks {
		if _, err := os.Lstat(d.Overlay); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("resume: %s holds the disk of an earlier copy (%s, with that copy's writes): remove it or give another work directory: %w",
				work, filepath.Base(d.Overlay), ErrWorkDirInUse)
		}
	}
	for _, f := range []string{p.QMP, p.Control, p.PIDFile} {
		os.Remove(f) // stale files of a copy that has stopped
	}
	// QEMU creates what it writes 0644 (its pid file 0600); files that
	// exist keep their mode.
	files := append([]string{p.Log}, p.Consoles...)
	if p.SerialLog != "" {
		files = append(files, p.SerialLog)
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".sock") {
			os.Remove(f)
			continue
		}
		if err := privateFile(f, os.O_TRUNC); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		if err := own(f); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	}
	// qemu-img writes a header and returns: a minute is plenty, and
	// resume must not hang on a wedged one.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i, d := range p.Disks {
		err := privateFile(d.Overlay, os.O_EXCL)
		if err == nil {
			var out []byte
			out, err = exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", d.Image,
				d.Overlay, strconv.FormatInt(d.Size, 10)).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
			}
		}
		if err == nil {
			err = own(d.Overlay)
		}
		if err != nil {
			for _, e := range p.Disks[:i+1] {
				os.Remove(e.Overlay)
			}
			return fmt.Errorf("resume: create overlay %s: %w", d.Overlay, err)
		}
	}
	return nil
}

// privateFile creates path 0600 (flag: O_EXCL or O_TRUNC) and closes it.
func privateFile(path string, flag int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// dial waits for QEMU's control socket and connects to it.
func (vm *VM) dial(ctx context.Context) (*qemu.Session, error) {
	s, err := qemu.DialStarting(ctx, vm.Plan.Control, qemu.DialOptions{}, vm.done)
	switch {
	case errors.Is(err, qemu.ErrExited):
		return nil, vm.exitError("start")
	case err != nil:
		select {
		case <-vm.done:
			return nil, vm.exitError("start")
		default:
		}
		return nil, fmt.Errorf("resume: %w", err)
	}
	return s, nil
}

// migrate feeds QEMU the stream through a pipe (getfd, migrate-incoming
// fd:) and waits for the migration to complete.
func (vm *VM) migrate(ctx context.Context, s *migstream.Stream, src migstream.Source) (int64, error) {
	c := vm.ctl
	caps := map[string]any{"capabilities": []map[string]any{{"capability": "events", "state": true}}}
	if err := c.Run(ctx, "migrate-set-capabilities", caps, nil); err != nil {
		return 0, vm.failed("incoming migration", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("resume: %w", err)
	}
	defer w.Close()
	err = c.RunWithFile(ctx, "getfd", map[string]any{"fdname": "ntc-incoming"}, r)
	r.Close()
	if err != nil {
		return 0, vm.failed("incoming migration", err)
	}
	mark := c.EventMark()
	if err := c.Run(ctx, "migrate-incoming", map[string]any{"uri": "fd:ntc-incoming"}, nil); err != nil {
		return 0, vm.failed("incoming migration", err)
	}
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cw := &countWriter{w: w}
	var wg sync.WaitGroup
	var joinErr error
	wg.Go(func() {
		joinErr = migstream.Join(jctx, cw, s, src)
		w.Close()
	})
	ev, _, err := c.WaitEvent(ctx, mark, func(e qemu.Event) bool {
		if e.Name != "MIGRATION" {
			return false
		}
		st := e.String("status")
		return st == "completed" || st == "failed" || st == "cancelled"
	})
	if err != nil || ev.String("status") != "completed" {
		// A QEMU that no longer reads the stream leaves Join stuck in a
		// write: closing the pipe ends it.
		cancel()
		w.Close()
	}
	wg.Wait()
	if err != nil {
		return cw.n, vm.failed("incoming migration", err)
	}
	if st := ev.String("status"); st != "completed" {
		// QEMU exits right after a failed incoming migration: its own
		// words say what did not match.
		select {
		case <-vm.done:
			return cw.n, vm.exitError("incoming migration")
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
		var mi struct {
			Error string `json:"error-desc"`
		}
		c.Run(ctx, "query-migrate", nil, &mi)
		return cw.n, fmt.Errorf("resume: incoming migration %s: %s: %w", st, mi.Error, ErrIncompatible)
	}
	if joinErr != nil {
		return cw.n, fmt.Errorf("resume: feed the migration stream: %w", joinErr)
	}
	return cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// failed turns err into QEMU's own words when QEMU has exited (or exits
// within a moment: a failed incoming migration ends QEMU right after the
// connection drops).
func (vm *VM) failed(stage string, err error) error {
	if errors.Is(err, qemu.ErrDisconnected) {
		select {
		case <-vm.done:
			return vm.exitError(stage)
		case <-time.After(5 * time.Second):
		}
	}
	select {
	case <-vm.done:
		return vm.exitError(stage)
	default:
	}
	return fmt.Errorf("resume: %s: %w", stage, err)
}

// exitError describes how QEMU ended; call only after done is closed.
func (vm *VM) exitError(stage string) error {
	status := "status 0"
	if err := vm.proc.err; err != nil {
		status = err.Error()
	}
	return &ExitError{Stage: stage, Status: status, Stderr: tail(vm.Plan.Log, 2048)}
}

// tail returns the end of a file, trimmed.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, fi.Size()-n)
	b := make([]byte, fi.Size()-off)
	k, _ := f.ReadAt(b, off)
	return strings.TrimSpace(string(b[:k]))
}

// PID is QEMU's process ID.
func (vm *VM) PID() int { return vm.proc.pid }

// Exited is closed once QEMU has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.done }

// ExitErr is how QEMU ended (nil: status 0); valid once Exited is closed.
func (vm *VM) ExitErr() error { return vm.proc.err }

// Session is ntc's QMP session with the copy (on Plan.Control).
func (vm *VM) Session() *qemu.Session { return vm.ctl }

// Stop asks QEMU to quit (QMP quit: it flushes and closes the overlays)
// and waits for it to exit; if ctx ends first, QEMU is killed. Stopping a
// copy that has exited returns nil.
func (vm *VM) Stop(ctx context.Context) error {
	select {
	case <-vm.done:
		vm.closeSession()
		return nil
	default:
	}
	if vm.ctl != nil {
		if err := vm.ctl.Run(ctx, "quit", nil, nil); err != nil && !errors.Is(err, qemu.ErrDisconnected) {
			vm.proc.signal(syscall.SIGTERM)
		}
	} else {
		vm.proc.signal(syscall.SIGTERM)
	}
	select {
	case <-vm.done:
		vm.closeSession()
		return nil
	case <-ctx.Done():
		vm.Kill()
		return fmt.Errorf("stop the copy: QEMU did not exit, killed: %w", ctx.Err())
	}
}

// Kill kills QEMU at once and waits for it to be gone.
func (vm *VM) Kill() error {
	select {
	case <-vm.done:
	default:
		if err := vm.proc.signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill the copy: %w", err)
		}
		<-vm.done
	}
	vm.closeSession()
	return nil
}

// Release lets the copy run on its own: ntc's QMP session ends (the
// control socket is free for another client) and, for a copy started with
// Detach, its keeper stops tying QEMU's life to this process. A copy
// started without Detach still dies with this process.
func (vm *VM) Release() error {
	vm.closeSession()
	if vm.proc.release == nil {
		return nil
	}
	if err := vm.proc.release(); err != nil {
		return fmt.Errorf("release the copy: %w", err)
	}
	return nil
}

func (vm *VM) closeSession() {
	if vm.ctl != nil {
		vm.ctl.Close()
	}
}
