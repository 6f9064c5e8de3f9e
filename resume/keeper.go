package resume

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The keeper of a detachable copy is a process of its own between ntc and
// QEMU (ntc re-executed as Config.Keeper says), started with SIGKILL as
// its parent-death signal. Its command line is
//
//	KEEPER… KeeperArg [--fds N] [--uid U --gid G] -- QEMU ARGV…
//
// its standard input the control, its standard output the status (QEMU's
// pid, then "released"), its standard error the copy's log, and its exit
// status QEMU's (KeeperExitCode). The program behind KeeperArg reads the
// command line with ParseKeeperArgs, runs Keep on its main thread and
// exits with KeeperExitCode of what Keep returned.

// KeeperArg is the first argument of a keeper's command line.
const KeeperArg = "__resume-keeper"

// The lines ntc and the keeper exchange on its control and status (after
// QEMU's pid).
const (
	keeperRelease  = "release"
	keeperReleased = "released"
)

// KeeperConfig is what a keeper runs: its command line after KeeperArg.
type KeeperConfig struct {
	// Argv is QEMU's command line.
	Argv []string
	// FDs: QEMU gets the keeper's descriptors 3 to 3+FDs-1 (the disks) as
	// its own 3, 4, …
	FDs int
	// Cred, when set, is the user QEMU runs as.
	Cred *syscall.Credential
}

// ParseKeeperArgs reads a keeper's command line after KeeperArg:
// [--fds N] [--uid U --gid G] -- QEMU ARGV….
func ParseKeeperArgs(args []string) (KeeperConfig, error) {
	var cfg KeeperConfig
	i := 0
	for ; i < len(args) && args[i] != "--"; i += 2 {
		if i+1 >= len(args) {
			return cfg, fmt.Errorf("resume keeper: argument %s lacks its value", args[i])
		}
		n, err := strconv.Atoi(args[i+1])
		if err != nil || n < 0 {
			return cfg, fmt.Errorf("resume keeper: %s %q: want a number", args[i], args[i+1])
		}
		switch args[i] {
		case "--fds":
			cfg.FDs = n
		case "--uid", "--gid":
			if cfg.Cred == nil {
				cfg.Cred = &syscall.Credential{}
			}
			if args[i] == "--uid" {
				cfg.Cred.Uid = uint32(n)
			} else {
				cfg.Cred.Gid = uint32(n)
			}
		default:
			return cfg, fmt.Errorf("resume keeper: unknown argument %s", args[i])
		}
	}
	if i+1 >= len(args) {
		return cfg, errors.New("resume keeper: no QEMU command line after --")
	}
	cfg.Argv = args[i+1:]
	return cfg, nil
}

// Keep is the keeper: it starts QEMU as cfg says, with its output on out
// and SIGKILL as its parent-death signal, and writes QEMU's pid on status.
// A line "release" on control clears the keeper's own parent-death signal
// (QEMU then outlives ntc; Keep stays to reap it), is answered "released"
// on status, and status is closed. The end of control before that kills
// QEMU, as does the end of ctx; after it, the end of ctx returns at once
// and leaves QEMU running.
//
// Keep returns how QEMU ended (nil: status 0; an *exec.ExitError), or
// the keeper's own failure. control is read by a goroutine that ends when
// a line or the end of control comes: call Keep in a process that exits
// once it returns.
//
// The parent-death signal is a property of the thread: call Keep on the
// thread the keeper's process started on (runtime.LockOSThread in an init
// function).
func Keep(ctx context.Context, cfg KeeperConfig, control io.Reader, status io.WriteCloser, out io.Writer) error {
	if len(cfg.Argv) == 0 {
		return errors.New("resume keeper: no QEMU command line")
	}
	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	for fd := range cfg.FDs {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(3+fd), "disk"))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cfg.Cred}
	err := cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("resume keeper: start %s: %w", cfg.Argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	kill := func() error {
		cmd.Process.Kill()
		return <-exited
	}
	if _, err := fmt.Fprintf(status, "%d\n", cmd.Process.Pid); err != nil {
		kill()
		return fmt.Errorf("resume keeper: say QEMU's pid: %w", err)
	}
	released := make(chan bool, 1) // false: ntc went away
	go func() {
		line, _ := bufio.NewReader(control).ReadString('\n')
		released <- strings.TrimSpace(line) == keeperRelease
	}()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
		kill()
		return fmt.Errorf("resume keeper: QEMU killed: %w", context.Cause(ctx))
	case ok := <-released:
		if !ok {
			return kill()
		}
	}
	// On the thread the signal was set on.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0); err != nil {
		kill()
		return fmt.Errorf("resume keeper: clear the parent-death signal: %w", err)
	}
	_, err = fmt.Fprintln(status, keeperReleased)
	if cerr := status.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// ntc does not learn of the release and kills the keeper: QEMU
		// no longer goes with it.
		kill()
		return fmt.Errorf("resume keeper: say released: %w", err)
	}
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
		return fmt.Errorf("resume keeper: stopped, QEMU (pid %d) runs on: %w", cmd.Process.Pid, context.Cause(ctx))
	}
}

// KeeperExitCode is the keeper's exit status for what Keep returned:
// QEMU's own (128+N for a signal N), or 125 for a failure of the keeper.
func KeeperExitCode(err error) int {
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

// RunKeeper is a keeper's main: ParseKeeperArgs, Keep on the standard
// descriptors, failures of its own on standard error; it returns the exit
// status (KeeperExitCode).
//
// Deprecated: for cmd/ntc until its keeper command calls ParseKeeperArgs,
// Keep and KeeperExitCode itself.
func RunKeeper(args []string) int {
	cfg, err := ParseKeeperArgs(args)
	if err == nil {
		err = Keep(context.Background(), cfg, os.Stdin, os.Stdout, os.Stderr)
	}
	if _, qemuEnded := errors.AsType[*exec.ExitError](err); err != nil && !qemuEnded {
		fmt.Fprintln(os.Stderr, "ntc", err)
	}
	return KeeperExitCode(err)
}
