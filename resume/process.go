package resume

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/qemu"
)

// KeeperArg is the first argument of the command line that runs RunKeeper.
const KeeperArg = "__resume-keeper"

// process is a running QEMU: started by this process (a child whose
// parent-death signal is SIGKILL), or by a keeper.
type process struct {
	pid  int
	done chan struct{} // closed once QEMU (or its keeper) is reaped
	err  error         // how it ended; valid once done is closed
	// signal sends QEMU a signal (through a pidfd where one is open).
	signal func(syscall.Signal) error
	// release lets a kept QEMU outlive this process; nil without a keeper.
	release func() error
}

// start starts QEMU on the plan, its disks as descriptors 3, 4, …, its
// output in the plan's log. Without a keeper QEMU is this process's child
// and dies with it (qemu.StartChild). With one (keeper: the command line
// running RunKeeper) the keeper is the child and QEMU the keeper's: both
// die with this process until release.
func start(p *Plan, disks []*os.File, cred *syscall.Credential, keeper []string) (*process, error) {
	log, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	pr := &process{done: make(chan struct{})}
	var cmd *exec.Cmd
	var status *bufio.Reader
	var control, statusR *os.File
	if keeper == nil {
		cmd = exec.Command(p.Argv[0], p.Argv[1:]...)
		cmd.Stdout, cmd.Stderr = log, log
		// Own process group: a terminal's ^C reaches ntc, which stops the
		// copy cleanly.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	} else {
		args := append([]string(nil), keeper[1:]...)
		args = append(args, "--fds", strconv.Itoa(len(disks)))
		if cred != nil {
			args = append(args, "--uid", strconv.Itoa(int(cred.Uid)), "--gid", strconv.Itoa(int(cred.Gid)))
		}
		args = append(args, "--")
		cmd = exec.Command(keeper[0], append(args, p.Argv...)...)
		var ctlR, statusW *os.File
		if ctlR, control, err = os.Pipe(); err != nil {
			return nil, err
		}
		if statusR, statusW, err = os.Pipe(); err != nil {
			ctlR.Close()
			control.Close()
			return nil, err
		}
		defer ctlR.Close()
		defer statusW.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = ctlR, statusW, log
		// Own session: no terminal's signals reach the keeper.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		status = bufio.NewReader(statusR)
	}
	cmd.Dir = p.dir()
	cmd.ExtraFiles = disks
	child, err := qemu.StartChild(cmd)
	if err != nil {
		if control != nil {
			control.Close()
			statusR.Close()
		}
		return nil, err
	}
	go func() {
		<-child.Done()
		pr.err = child.Err()
		close(pr.done)
	}()
	if keeper == nil {
		pr.pid = child.PID()
		pr.signal = child.Signal
		return pr, nil
	}
	// The keeper says QEMU's pid, or exits.
	line, err := status.ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil || pid <= 0 {
		control.Close()
		statusR.Close()
		child.Kill()
		<-pr.done
		return nil, fmt.Errorf("start QEMU through its keeper: it said %q (%v); see %s", line, err, p.Log)
	}
	pr.pid = pid
	// A pidfd names this QEMU for good; the keeper, QEMU's parent, has
	// not reaped it, so the pid cannot have been reused yet.
	pidfd, perr := unix.PidfdOpen(pid, 0)
	pr.signal = func(sig syscall.Signal) error {
		select {
		case <-pr.done:
			return os.ErrProcessDone
		default:
		}
		if perr == nil {
			return unix.PidfdSendSignal(pidfd, sig, nil, 0)
		}
		return syscall.Kill(pid, sig)
	}
	var once sync.Once
	go func() {
		<-pr.done
		once.Do(func() {
			control.Close()
			statusR.Close()
		})
		if perr == nil {
			unix.Close(pidfd)
		}
	}()
	pr.release = func() error {
		if _, err := control.Write([]byte("release\n")); err != nil {
			return err
		}
		line, err := status.ReadString('\n')
		if strings.TrimSpace(line) != "released" {
			return fmt.Errorf("the keeper said %q (%v)", line, err)
		}
		return nil
	}
	return pr, nil
}

func (p *Plan) dir() string { return p.Control[:strings.LastIndexByte(p.Control, '/')] }

// RunKeeper is the keeper of a detachable copy, in a process of its own
// (ntc KeeperArg [--fds N] [--uid U --gid G] -- QEMU ARGV…), started with
// SIGKILL as its parent-death signal. It starts QEMU with its own
// descriptors 3 to 3+N-1, SIGKILL as QEMU's parent-death signal, and
// writes QEMU's pid on standard output. Standard input is the control:
// "release" clears the keeper's parent-death signal (QEMU then outlives
// ntc; the keeper stays to reap it) and is answered "released"; the end of
// the input before that kills QEMU. It returns QEMU's exit code.
//
// The parent-death signal is a property of the thread: the caller must
// run RunKeeper on the main thread (runtime.LockOSThread in an init
// function).
func RunKeeper(args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "ntc resume keeper: "+format+"\n", a...)
		return 125
	}
	var nfds int
	var cred *syscall.Credential
	i := 0
	for ; i < len(args) && args[i] != "--"; i += 2 {
		if i+1 >= len(args) {
			return fail("argument %s lacks its value", args[i])
		}
		n, err := strconv.Atoi(args[i+1])
		if err != nil || n < 0 {
			return fail("%s %q", args[i], args[i+1])
		}
		switch args[i] {
		case "--fds":
			nfds = n
		case "--uid", "--gid":
			if cred == nil {
				cred = &syscall.Credential{}
			}
			if args[i] == "--uid" {
				cred.Uid = uint32(n)
			} else {
				cred.Gid = uint32(n)
			}
		default:
			return fail("unknown argument %s", args[i])
		}
	}
	if i+1 >= len(args) {
		return fail("no QEMU command line after --")
	}
	argv := args[i+1:]
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	for fd := range nfds {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(3+fd), "disk"))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		return fail("start %s: %v", argv[0], err)
	}
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if _, err := fmt.Fprintf(os.Stdout, "%d\n", cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	control := make(chan bool, 1) // true: release; false: ntc went away
	go func() {
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		control <- strings.TrimSpace(line) == "release"
	}()
	for {
		select {
		case err := <-exited:
			return exitCode(err)
		case release := <-control:
			if !release {
				cmd.Process.Kill()
				return exitCode(<-exited)
			}
			// On this (main) thread: the one the signal was set on.
			if err := unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0); err != nil {
				cmd.Process.Kill()
				fail("clear the parent-death signal: %v", err)
				return exitCode(<-exited)
			}
			fmt.Fprintln(os.Stdout, "released")
			os.Stdout.Close()
			return exitCode(<-exited)
		}
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		return 125
	}
}

// qemuBinary picks the QEMU to run: the given one, else qemu-system-ARCH
// on PATH. Never anything a checkpoint names.
func qemuBinary(given, arch string) (string, error) {
	name := given
	if name == "" {
		name = "qemu-system-" + arch
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if given == "" {
			return "", fmt.Errorf("the checkpoint's guest needs %s, which is not on PATH: %w: %w", name, ErrNoQEMU, err)
		}
		return "", fmt.Errorf("QEMU binary %s: %w", given, err)
	}
	return p, nil
}

// sandboxes caches which QEMU binaries take -sandbox (seccomp).
var sandboxes sync.Map // path → bool

// sandboxSupported asks qemu once whether it was built with seccomp:
// `qemu -sandbox OPTS -version` fails at once in a build without it.
func sandboxSupported(ctx context.Context, qemu string) bool {
	if v, ok := sandboxes.Load(qemu); ok {
		return v.(bool)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := exec.CommandContext(ctx, qemu, "-sandbox", sandboxOpts, "-version").Run()
	if ctx.Err() != nil {
		return false // unknown this time: ask again next time
	}
	sandboxes.Store(qemu, err == nil)
	return err == nil
}

// lookupUser returns the credentials QEMU runs with under --user.
func lookupUser(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s has uid %q, gid %q", name, u.Uid, u.Gid)
	}
	if os.Geteuid() != 0 && uint64(os.Geteuid()) != uid {
		return nil, fmt.Errorf("running QEMU as %s takes root", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false, Groups: []uint32{}}, nil
}

// fileDigest returns the SHA-256 of a local file, hex.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
