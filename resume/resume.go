package resume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/capture/migstream"
)

// Network says what happens to the copy's network links.
type Network string

const (
	// NetworkOff sets every NIC's link down after the incoming migration,
	// before the guest runs: the copy cannot clash with the original.
	NetworkOff Network = "off"
	// NetworkOn leaves the links as the source had them.
	NetworkOn Network = "on"
)

// ManifestImage is the image that carries a checkpoint's manifest when it
// travels (ntc push --checkpoint).
const ManifestImage = "manifest.json"

// Config says which checkpoint to resume and where.
type Config struct {
	// Images is the directory holding the checkpoint's images as files
	// (a receiver's STORE/sets/SET/images): manifest.json, the disks
	// (raw), the RAM blocks, "device" and "stream". They are only read.
	Images string
	// WorkDir gets the disk overlays, sockets, serial console and QEMU's
	// log. Created if needed; it must not hold an earlier resume's disks.
	WorkDir string
	// Network: NetworkOff (the default, "") or NetworkOn.
	Network Network
	// QEMU is the binary to run; empty: the source's, or its base name on
	// PATH.
	QEMU string
	// Detach lets QEMU outlive this process; otherwise it is killed when
	// the process dies.
	Detach bool
	// Manifest overrides Images/manifest.json.
	Manifest *capture.Manifest
}

// Sentinel errors.
var (
	// ErrWorkDirInUse: the work directory holds an earlier resume's disks.
	ErrWorkDirInUse = errors.New("work directory in use")
	// ErrIncompatible: the checkpoint cannot be resumed by this QEMU here.
	ErrIncompatible = errors.New("checkpoint does not fit the QEMU started for it")
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

	cmd  *exec.Cmd
	ctl  *capture.Session
	done chan struct{} // closed once QEMU is reaped
	werr error         // valid once done is closed
	log  *os.File
}

// Start resumes the checkpoint in cfg.Images: it starts QEMU with the
// source's machine (-incoming defer, paused), each disk on a new overlay
// in cfg.WorkDir, feeds it the migration stream rebuilt from the images,
// waits for the migration to complete, sets the NIC links down (unless
// NetworkOn) and lets the guest run. On error nothing it started is left
// running. The returned VM outlives ctx, which bounds only the start.
func Start(ctx context.Context, cfg Config) (vm *VM, err error) {
	t0 := time.Now()
	if cfg.Network == "" {
		cfg.Network = NetworkOff
	}
	if cfg.Network != NetworkOff && cfg.Network != NetworkOn {
		return nil, fmt.Errorf("resume: network %q: want %s or %s", cfg.Network, NetworkOff, NetworkOn)
	}
	m := cfg.Manifest
	if m == nil {
		if m, err = ReadManifest(cfg.Images); err != nil {
			return nil, err
		}
	}
	work, err := filepath.Abs(cfg.WorkDir)
	if err != nil || cfg.WorkDir == "" {
		return nil, fmt.Errorf("resume: work directory %q: %v", cfg.WorkDir, err)
	}
	images, err := filepath.Abs(cfg.Images)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	stream, src, err := openStream(images, m)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	qemu, err := qemuBinary(cfg.QEMU, m.Machine.Argv[0])
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	p, err := plan(m, images, work, cfg.Network, qemu)
	if err != nil {
		return nil, fmt.Errorf("resume checkpoint %d: %w", m.Seq, err)
	}
	if err := prepareWorkDir(ctx, p); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			for _, d := range p.Disks {
				os.Remove(d.Overlay)
			}
		}
	}()
	v := &VM{Plan: p, Manifest: m, done: make(chan struct{})}
	v.Timings.Prepare = time.Since(t0)

	t1 := time.Now()
	if err := v.launch(cfg.Detach); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			v.Kill()
		}
	}()
	vm = v
	if vm.ctl, err = vm.dial(ctx); err != nil {
		return nil, err
	}
	vm.Timings.Launch = time.Since(t1)

	t2 := time.Now()
	if vm.Timings.StreamBytes, err = vm.migrate(ctx, stream, src); err != nil {
		return nil, err
	}
	vm.Timings.Migrate = time.Since(t2)
	if cfg.Network == NetworkOff {
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

// ReadManifest reads the checkpoint manifest among the images in dir.
func ReadManifest(dir string) (*capture.Manifest, error) {
	p := filepath.Join(dir, ManifestImage)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("resume: read the checkpoint's manifest: %w (is %s a checkpoint pushed with 'ntc push --checkpoint'?)", err, dir)
	}
	var m capture.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("resume: read %s: %w", p, err)
	}
	if m.Version != capture.ManifestVersion {
		return nil, fmt.Errorf("resume: %s: manifest version %d, this ntc reads %d", p, m.Version, capture.ManifestVersion)
	}
	return &m, nil
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

// openStream reads the stream description and the device state and opens
// the RAM images; it checks that every image the manifest names is there
// with its size.
func openStream(dir string, m *capture.Manifest) (*migstream.Stream, *fileSource, error) {
	read := func(index string, size int64) ([]byte, error) {
		p := filepath.Join(dir, imageName(index))
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
		if int64(len(b)) != size {
			return nil, fmt.Errorf("resume: %s holds %d bytes, the manifest says %d", p, len(b), size)
		}
		return b, nil
	}
	if m.Stream.Format != capture.StreamFormat {
		return nil, nil, fmt.Errorf("resume checkpoint %d: stream format %q, this ntc reads %q", m.Seq, m.Stream.Format, capture.StreamFormat)
	}
	meta, err := read(m.Stream.Index, m.Stream.Size)
	if err != nil {
		return nil, nil, err
	}
	s, err := capture.DecodeStreamDescription(meta)
	if err != nil {
		return nil, nil, fmt.Errorf("resume checkpoint %d: %w", m.Seq, err)
	}
	if s.Devices, err = read(m.DeviceState.Index, m.DeviceState.Size); err != nil {
		return nil, nil, err
	}
	for _, d := range m.Disks {
		p := filepath.Join(dir, imageName(d.Index))
		fi, err := os.Stat(p)
		if err != nil {
			return nil, nil, fmt.Errorf("resume: disk %s: %w", d.Device, err)
		}
		if fi.Size() != d.Size {
			return nil, nil, fmt.Errorf("resume: disk image %s holds %d bytes, the manifest says %d", p, fi.Size(), d.Size)
		}
	}
	src := &fileSource{files: map[string]*os.File{}}
	for _, b := range m.RAM {
		f, err := os.Open(filepath.Join(dir, imageName(b.Index)))
		if err != nil {
			src.Close()
			return nil, nil, fmt.Errorf("resume: RAM block %s: %w", b.Name, err)
		}
		src.files[b.Name] = f
	}
	return s, src, nil
}

// prepareWorkDir creates the work directory and the disk overlays. A
// directory that holds an overlay already belongs to an earlier copy,
// whose disk writes are there: it is refused.
func prepareWorkDir(ctx context.Context, p *Plan) error {
	work := filepath.Dir(p.Control)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	for _, d := range p.Disks {
		if _, err := os.Stat(d.Overlay); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("resume: %s holds the disk of an earlier copy (%s, with that copy's writes): remove it or give another work directory: %w",
				work, filepath.Base(d.Overlay), ErrWorkDirInUse)
		}
	}
	for _, f := range []string{p.QMP, p.Control, p.Log, p.PIDFile} {
		os.Remove(f) // stale files of a copy that has stopped
	}
	for i, d := range p.Disks {
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", d.Image, d.Overlay).CombinedOutput()
		if err != nil {
			for _, e := range p.Disks[:i+1] {
				os.Remove(e.Overlay)
			}
			return fmt.Errorf("resume: create overlay %s on %s: %w: %s", d.Overlay, d.Image, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// launch starts QEMU with its output in the log file.
func (vm *VM) launch(detach bool) error {
	p := vm.Plan
	log, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Dir = filepath.Dir(p.Control)
	cmd.Stdout, cmd.Stderr = log, log
	// Own process group: a terminal's ^C reaches ntc, which stops the copy.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("resume: start %s: %w", p.Argv[0], err)
	}
	vm.cmd, vm.log = cmd, log
	go func() {
		vm.werr = cmd.Wait()
		log.Close()
		close(vm.done)
	}()
	return nil
}

// dial waits for QEMU's control socket and connects to it. QEMU announces
// the socket no other way, so until it exists the check repeats every
// 10 ms.
func (vm *VM) dial(ctx context.Context) (*capture.Session, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(vm.Plan.Control); err == nil {
			s, err := capture.Dial(ctx, vm.Plan.Control, capture.DialOptions{})
			if err == nil {
				return s, nil
			}
			select {
			case <-vm.done:
				return nil, vm.exitError("start")
			default:
			}
			return nil, fmt.Errorf("resume: %w", err)
		}
		select {
		case <-vm.done:
			return nil, vm.exitError("start")
		case <-ctx.Done():
			return nil, fmt.Errorf("resume: wait for QEMU's QMP socket: %w", ctx.Err())
		case <-t.C:
		}
	}
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
	ev, _, err := c.WaitEvent(ctx, mark, func(e capture.Event) bool {
		if e.Name != "MIGRATION" {
			return false
		}
		st := e.String("status")
		return st == "completed" || st == "failed" || st == "cancelled"
	})
	if err != nil {
		cancel()
		wg.Wait()
		return cw.n, vm.failed("incoming migration", err)
	}
	wg.Wait()
	if st := ev.String("status"); st != "completed" {
		// QEMU exits right after a failed incoming migration: its own
		// words say what did not match.
		select {
		case <-vm.done:
			return cw.n, vm.exitError("incoming migration")
		case <-time.After(5 * time.Second):
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
	if errors.Is(err, capture.ErrDisconnected) {
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
	if vm.werr != nil {
		status = vm.werr.Error()
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
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Exited is closed once QEMU has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.done }

// ExitErr is how QEMU ended (nil: status 0); valid once Exited is closed.
func (vm *VM) ExitErr() error { return vm.werr }

// Session is ntc's QMP session with the copy (on Plan.Control).
func (vm *VM) Session() *capture.Session { return vm.ctl }

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
		if err := vm.ctl.Run(ctx, "quit", nil, nil); err != nil && !errors.Is(err, capture.ErrDisconnected) {
			vm.cmd.Process.Signal(syscall.SIGTERM)
		}
	} else {
		vm.cmd.Process.Signal(syscall.SIGTERM)
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
		if err := vm.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill the copy: %w", err)
		}
		<-vm.done
	}
	vm.closeSession()
	return nil
}

// Release lets the copy run on its own: ntc's QMP session ends (the
// control socket is free for another client). Start it with Detach, or it
// dies with this process.
func (vm *VM) Release() error {
	vm.closeSession()
	return nil
}

func (vm *VM) closeSession() {
	if vm.ctl != nil {
		vm.ctl.Close()
	}
}
