package testguest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/internal/procstat"
	"github.com/ntc-project/ntc/qemu"
	"github.com/ntc-project/ntc/qemu/opt"
)

// Names the launched machine gives its parts, for QMP commands
// (blockdev-snapshot-sync on DiskNode, set_link on NICDevice, …).
const (
	DiskFileNode = "file0" // protocol node under DiskNode
	DiskNode     = "disk0" // format node the disk device uses
	DiskDevice   = "vda"   // virtio-blk-pci device id, at PCI slot 4
	NICDevice    = "nic0"  // virtio-net-pci device id, at PCI slot 5
	NetdevID     = "n0"    // user-mode netdev, restricted: reaches nothing
)

// Defaults of StartOptions.
const (
	DefaultMemoryMiB   = 256
	DefaultDiskSizeMiB = 64
	DefaultQEMU        = "qemu-system-x86_64"
)

// guestReserveMiB is what the guest needs besides ntc.busy: kernel, page
// tables, initramfs and the shell (the guest reports ≈200 MiB available out
// of 256).
const guestReserveMiB = 80

// StartOptions describe the machine [Start] launches. The zero value is a
// 256 MiB, one-CPU pc machine under TCG with a new 64 MiB qcow2 disk and no NIC.
type StartOptions struct {
	// Guest to boot; nil builds (or finds) the default one with Build.
	Guest *Guest
	// Dir holds the disk, the QMP socket and the serial log. Empty: a new
	// temporary directory, removed by Close. Keep it short: the QMP socket
	// path must fit in 107 bytes.
	Dir string

	MemoryMiB int // -m; default 256
	// Memory is how guest RAM is backed; default MemoryPrivate.
	Memory Memory
	CPUs   int // -smp; default 1
	// BusyMiB is ntc.busy: MiB of guest RAM rewritten with random bytes
	// continuously (a pass, then a second's pause). At most MemoryMiB-80.
	BusyMiB int
	// DiskBusyMiB is ntc.diskbusy: MiB of the disk, from 1 MiB on, rewritten
	// the same way. Must fit in the disk.
	DiskBusyMiB int

	// DiskPath attaches an existing image (qcow2 or raw, told apart by its
	// content) instead of creating DiskSizeMiB of qcow2 in Dir.
	DiskPath    string
	DiskSizeMiB int // default 64
	// NIC adds a virtio-net-pci device on a restricted user-mode netdev. The
	// guest loads the driver but never brings the interface up.
	NIC bool

	Machine string // default "pc"
	Accel   string // default "tcg"; KVM hangs on the project's machines
	QEMU    string // binary; default qemu-system-x86_64 from PATH
	// Append is added to the kernel command line.
	Append string
	// ExtraArgs are appended to the QEMU command line, e.g. "-S" or
	// "-incoming", "defer".
	ExtraArgs []string
}

// Memory is how the guest's RAM is backed.
type Memory string

const (
	// MemoryShared backs guest RAM with a shared memfd, allocated when
	// QEMU starts (memory-backend-memfd, share=on, prealloc=on), under the
	// RAM block name "pc.ram" that -m alone gives. The backend fixes the
	// RAM size: a QEMU started from the same argv with another -m fails.
	MemoryShared Memory = "shared"
	// MemoryPrivate (the default) is QEMU's default for -m: private
	// anonymous memory. A QEMU 7.2 background snapshot pauses such a
	// guest for about 300 ms per 256 MiB on the project's machines: see
	// package capture.
	MemoryPrivate Memory = "private"
	// MemoryHugePages is MemoryShared on 2 MiB huge pages (hugetlb=on):
	// a background snapshot then touches and write-protects 128 pages
	// per 256 MiB instead of 65,536, and the guest pauses for 11-15 ms
	// at the median. The host must have the huge pages free: see
	// HugePagesFree and PreferHugePages.
	MemoryHugePages Memory = "hugepages"
)

// PreferHugePages is the memory a guest of mib MiB gets where the fastest
// checkpoints are wanted (the demo): MemoryHugePages if the host has that
// many MiB of huge pages free (scripts/deps.sh reserves them), otherwise
// MemoryPrivate. Another QEMU may take the pages between this check and
// Start: Start then fails with QEMU's own words.
func PreferHugePages(mib int) Memory {
	if mib == 0 {
		mib = DefaultMemoryMiB
	}
	if HugePagesFree() >= mib {
		return MemoryHugePages
	}
	return MemoryPrivate
}

// HugePagesFree returns how many MiB of 2 MiB huge pages the host has free
// (HugePages_Free in /proc/meminfo); root reserves them with
// `echo N > /proc/sys/vm/nr_hugepages`.
func HugePagesFree() int { return int(procstat.HugePagesFree() >> 20) }

// ErrExited is returned (wrapped, with QEMU's exit status and last words) by
// waits on a VM whose QEMU process has ended.
var ErrExited = errors.New("qemu exited")

// VM is a running QEMU process booted from a Guest. Its serial console is
// read continuously: [VM.WaitSerial] and [VM.WaitTick] await lines without
// polling. Methods are safe for concurrent use.
type VM struct {
	argv      []string
	dir       string
	ownDir    bool
	qmp       string
	disk      string
	serialLog string
	child     *qemu.Child
	stderr    *tailBuffer
	done      chan struct{} // closed once the process is reaped and all output read
	console   *Console      // ended with the exit error once QEMU is reaped
	waitErr   error         // valid once done is closed
}

// Start launches QEMU with the guest and returns once QMP answers commands
// (QEMU has created the machine; the socket is free again for one client).
// The process outlives ctx, which bounds only the start (building the guest,
// creating the disk, waiting for QMP); end it with Stop, Kill or Close. It is
// also killed if the calling process dies (qemu.StartChild: from any
// goroutine, even one that locks its thread and then ends).
//
// The serial console is QEMU's standard output (-chardev stdio): whoever runs
// Argv again must read it.
func Start(ctx context.Context, opts StartOptions) (vm *VM, err error) {
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = DefaultMemoryMiB
	}
	if opts.CPUs == 0 {
		opts.CPUs = 1
	}
	if opts.DiskSizeMiB == 0 {
		opts.DiskSizeMiB = DefaultDiskSizeMiB
	}
	if opts.Machine == "" {
		opts.Machine = "pc"
	}
	if opts.Accel == "" {
		opts.Accel = "tcg"
	}
	if opts.QEMU == "" {
		opts.QEMU = DefaultQEMU
	}
	if opts.Memory == "" {
		opts.Memory = MemoryPrivate
	}
	switch opts.Memory {
	case MemoryShared, MemoryPrivate:
	case MemoryHugePages:
		if free := HugePagesFree(); free < opts.MemoryMiB {
			return nil, fmt.Errorf("start guest: %d MiB of RAM on huge pages, the host has %d MiB of 2 MiB huge pages free (as root: echo %d > /proc/sys/vm/nr_hugepages)",
				opts.MemoryMiB, free, opts.MemoryMiB/2)
		}
	default:
		return nil, fmt.Errorf("start guest: memory %q: want %q, %q or %q", opts.Memory, MemoryShared, MemoryPrivate, MemoryHugePages)
	}
	switch {
	case opts.BusyMiB < 0 || opts.BusyMiB > opts.MemoryMiB-guestReserveMiB:
		return nil, fmt.Errorf("start guest: BusyMiB %d must be between 0 and MemoryMiB-%d = %d",
			opts.BusyMiB, guestReserveMiB, opts.MemoryMiB-guestReserveMiB)
	case opts.DiskBusyMiB < 0 || (opts.DiskPath == "" && opts.DiskBusyMiB > opts.DiskSizeMiB-1):
		return nil, fmt.Errorf("start guest: DiskBusyMiB %d must be between 0 and DiskSizeMiB-1 = %d",
			opts.DiskBusyMiB, opts.DiskSizeMiB-1)
	}
	qemu, err := exec.LookPath(opts.QEMU)
	if err != nil {
		return nil, fmt.Errorf("start guest: %w (install Debian's qemu-system-x86)", err)
	}
	g := opts.Guest
	if g == nil {
		if g, err = Build(ctx, Options{}); err != nil {
			return nil, err
		}
	}

	vm = &VM{dir: opts.Dir, console: NewConsole(), done: make(chan struct{}), stderr: &tailBuffer{max: 16 << 10}}
	if vm.dir == "" {
		if vm.dir, err = os.MkdirTemp("", "ntcvm-"); err != nil {
			return nil, fmt.Errorf("start guest: %w", err)
		}
		vm.ownDir = true
		dir := vm.dir
		defer func() {
			if err != nil {
				os.RemoveAll(dir)
			}
		}()
	}
	if vm.dir, err = filepath.Abs(vm.dir); err != nil {
		return nil, fmt.Errorf("start guest: %w", err)
	}
	vm.qmp = filepath.Join(vm.dir, "qmp.sock")
	if len(vm.qmp) > 107 {
		return nil, fmt.Errorf("start guest: QMP socket path %s is longer than a unix socket allows: use a shorter Dir", vm.qmp)
	}
	os.Remove(vm.qmp) // a stale socket from an earlier VM in the same Dir
	vm.serialLog = filepath.Join(vm.dir, "serial.log")

	diskFormat := "qcow2"
	if opts.DiskPath != "" {
		if vm.disk, err = filepath.Abs(opts.DiskPath); err != nil {
			return nil, fmt.Errorf("start guest: %w", err)
		}
		if diskFormat, err = imageFormat(vm.disk); err != nil {
			return nil, fmt.Errorf("start guest: %w", err)
		}
	} else {
		vm.disk = filepath.Join(vm.dir, "disk.qcow2")
		if _, err := run(ctx, "", "qemu-img comes with Debian's qemu-utils", "qemu-img", "create", "-q", "-f", "qcow2",
			vm.disk, strconv.Itoa(opts.DiskSizeMiB)+"M"); err != nil {
			return nil, fmt.Errorf("start guest: create disk: %w", err)
		}
	}

	cmdline := fmt.Sprintf("console=ttyS0 panic=1 ntc.busy=%d ntc.diskbusy=%d", opts.BusyMiB, opts.DiskBusyMiB)
	if opts.Append != "" {
		cmdline += " " + opts.Append
	}
	machine := opts.Machine + ",accel=" + opts.Accel
	var memory []string
	if opts.Memory != MemoryPrivate {
		machine += ",memory-backend=" + ramBackend
		backend := fmt.Sprintf("memory-backend-memfd,id=%s,size=%dM,share=on,prealloc=on,x-use-canonical-path-for-ramblock-id=off",
			ramBackend, opts.MemoryMiB)
		if opts.Memory == MemoryHugePages {
			backend += ",hugetlb=on,hugetlbsize=2M"
		}
		memory = []string{"-object", backend}
	}
	vm.argv = []string{
		qemu,
		"-machine", machine,
		"-cpu", "qemu64",
		"-smp", strconv.Itoa(opts.CPUs),
		"-m", strconv.Itoa(opts.MemoryMiB),
		"-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", g.Kernel,
		"-initrd", g.Initrd,
		"-append", cmdline,
		"-chardev", "stdio,id=ser0,signal=off",
		"-serial", "chardev:ser0",
		"-qmp", "unix:" + opt.Escape(vm.qmp) + ",server=on,wait=off",
		"-blockdev", "driver=file,filename=" + opt.Escape(vm.disk) + ",node-name=" + DiskFileNode,
		"-blockdev", "driver=" + diskFormat + ",file=" + DiskFileNode + ",node-name=" + DiskNode,
		"-device", "virtio-blk-pci,drive=" + DiskNode + ",id=" + DiskDevice + ",addr=0x4",
	}
	vm.argv = append(vm.argv, memory...)
	if opts.NIC {
		vm.argv = append(vm.argv,
			"-netdev", "user,id="+NetdevID+",restrict=on",
			"-device", "virtio-net-pci,netdev="+NetdevID+",id="+NICDevice+",addr=0x5")
	}
	vm.argv = append(vm.argv, opts.ExtraArgs...)

	if err := vm.start(); err != nil {
		return nil, err
	}
	if err := vm.waitQMP(ctx); err != nil {
		vm.Kill()
		return nil, err
	}
	return vm, nil
}

// ramBackend is the id of the memory backend of MemoryShared: the RAM block
// name -m gives, so that the migration stream is the same.
const ramBackend = "pc.ram"

// imageFormat tells qcow2 from raw by the qcow2 magic.
func imageFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if string(magic[:]) == "QFI\xfb" {
		return "qcow2", nil
	}
	return "raw", nil
}

func (vm *VM) start() error {
	log, err := os.Create(vm.serialLog)
	if err != nil {
		return fmt.Errorf("start guest: %w", err)
	}
	out, w, err := os.Pipe()
	if err != nil {
		log.Close()
		return fmt.Errorf("start guest: %w", err)
	}
	cmd := exec.Command(vm.argv[0], vm.argv[1:]...)
	cmd.Dir = vm.dir
	cmd.Stdout, cmd.Stderr = w, vm.stderr
	// Own process group: a terminal's ^C goes to the caller, which stops the
	// VM itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	vm.child, err = qemu.StartChild(cmd)
	w.Close()
	if err != nil {
		out.Close()
		log.Close()
		return fmt.Errorf("start guest: %w", err)
	}
	go vm.pump(out, log)
	return nil
}

// pump reads the serial console until QEMU exits, then waits until it is
// reaped. It owns out and log.
func (vm *VM) pump(out, log *os.File) {
	r := bufio.NewReaderSize(out, 64<<10)
	for {
		s, err := r.ReadString('\n')
		if s != "" {
			log.WriteString(s)
			vm.console.Add(strings.TrimRight(s, "\r\n"))
		}
		if err != nil {
			break
		}
	}
	out.Close()
	log.Close()
	<-vm.child.Done()
	vm.waitErr = vm.child.Err()
	vm.console.End(vm.exitError())
	close(vm.done)
}

// waitQMP waits until QMP answers a command. The greeting alone proves
// little: QEMU sends it from the monitor's own thread while still creating
// devices; commands run in the main loop, once the machine exists. It returns
// early if QEMU exits or ctx ends. QEMU announces the socket no other way, so
// until it exists the check repeats every 10 ms.
func (vm *VM) waitQMP(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		err := vm.qmpReady(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start guest: wait for QMP on %s: %w (last: %v)", vm.qmp, ctx.Err(), err)
		case <-vm.done:
			return fmt.Errorf("start guest: %w", vm.exitError())
		case <-t.C:
		}
	}
}

// qmpReady connects to QMP, runs query-status and hangs up, which frees the
// socket for the next client.
func (vm *VM) qmpReady(ctx context.Context) error {
	s, err := qemu.Dial(ctx, vm.qmp, qemu.DialOptions{})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx, "query-status", nil, nil)
}

// exitError describes how QEMU ended; call only once it is reaped.
func (vm *VM) exitError() error {
	lines := vm.console.Lines()
	tail := lines[max(0, len(lines)-5):]
	status := "status 0"
	if vm.waitErr != nil {
		status = vm.waitErr.Error()
	}
	msg := fmt.Sprintf("%v (%s)", ErrExited, status)
	if s := strings.TrimSpace(vm.stderr.String()); s != "" {
		msg += "; stderr: " + s
	}
	if len(tail) > 0 {
		msg += "; serial ends: " + strings.Join(tail, " | ")
	}
	return &exitError{msg: msg}
}

type exitError struct{ msg string }

func (e *exitError) Error() string        { return e.msg }
func (e *exitError) Is(target error) bool { return target == ErrExited }

// Argv returns QEMU's full command line, argv[0] included (an absolute path).
// Starting it again (with -incoming, or another disk) gives an identical
// machine.
func (vm *VM) Argv() []string { return append([]string(nil), vm.argv...) }

// PID is QEMU's process ID.
func (vm *VM) PID() int { return vm.child.PID() }

// QMPPath is the path of the QMP unix socket. It serves one client at a time.
func (vm *VM) QMPPath() string { return vm.qmp }

// DiskPath is the image attached as DiskNode.
func (vm *VM) DiskPath() string { return vm.disk }

// Dir is the directory holding the QMP socket, the serial log and (unless
// StartOptions.DiskPath was set) the disk.
func (vm *VM) Dir() string { return vm.dir }

// SerialLogPath is the file the raw serial output is copied to.
func (vm *VM) SerialLogPath() string { return vm.serialLog }

// Stderr returns the end of QEMU's standard error.
func (vm *VM) Stderr() string { return vm.stderr.String() }

// Exited is closed once QEMU has exited and all its output has been read.
func (vm *VM) Exited() <-chan struct{} { return vm.done }

// Serial returns the serial lines read so far (the newest 65536 at most),
// without line endings.
func (vm *VM) Serial() []string { return vm.console.Lines() }

// SerialLines is the number of serial lines read so far: a mark to pass to
// WaitSerialFrom to see only lines that come later.
func (vm *VM) SerialLines() int { return vm.console.Mark() }

// WaitSerial waits for a serial line matching re, considering every line
// since QEMU started, and returns the first one's submatches.
func (vm *VM) WaitSerial(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	m, _, err := vm.WaitSerialFrom(ctx, 0, re)
	return m, err
}

// WaitSerialFrom waits for a line matching re among lines numbered from
// (counting from 0 since QEMU started; see SerialLines) and returns its
// submatches and number. Once QEMU has exited and no such line came, it
// fails with ErrExited.
func (vm *VM) WaitSerialFrom(ctx context.Context, from int, re *regexp.Regexp) ([]string, int, error) {
	return vm.console.WaitLine(ctx, from, re)
}

// LastTick is the N of the last "tick N" line, 0 before the first.
func (vm *VM) LastTick() int { return vm.console.LastTick() }

// WaitTick waits until the guest has printed "tick N" with N ≥ n and returns
// that N. Every tick seen is already on the disk.
func (vm *VM) WaitTick(ctx context.Context, n int) (int, error) { return vm.console.WaitTick(ctx, n) }

// RSS returns QEMU's resident memory in bytes.
func (vm *VM) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", vm.PID()))
	if err != nil {
		return 0, fmt.Errorf("read QEMU memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("read QEMU memory: no VmRSS")
}

// Stop shuts QEMU down cleanly (SIGTERM: QEMU flushes and closes its images,
// so the disk can be read afterwards) and waits for it to exit. If ctx ends
// first, QEMU is killed. Stopping a VM that has exited returns nil.
func (vm *VM) Stop(ctx context.Context) error {
	err := vm.child.Stop(ctx)
	<-vm.done
	if err != nil {
		return fmt.Errorf("stop guest: %w", err)
	}
	return nil
}

// Kill kills QEMU at once and waits for it to be gone. The disk holds what
// the guest had flushed.
func (vm *VM) Kill() error {
	err := vm.child.Kill()
	<-vm.done
	if err != nil {
		return fmt.Errorf("kill guest: %w", err)
	}
	return nil
}

// Close kills QEMU and removes Dir if Start created it.
func (vm *VM) Close() error {
	err := vm.Kill()
	if vm.ownDir {
		if rerr := os.RemoveAll(vm.dir); err == nil && rerr != nil {
			err = fmt.Errorf("remove guest directory: %w", rerr)
		}
	}
	return err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
