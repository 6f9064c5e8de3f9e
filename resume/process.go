package resume

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
		if _, err := io.WriteString(control, keeperRelease+"\n"); err != nil {
			return err
		}
		line, err := status.ReadString('\n')
		if strings.TrimSpace(line) != keeperReleased {
			return fmt.Errorf("the keeper said %q (%v)", line, err)
		}
		return nil
	}
	return pr, nil
}

func (p *Plan) dir() string { return p.Control[:strings.LastIndexByte(p.Control, '/')] }

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
