package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// Child is a process this process started and reaps: a QEMU, or the keeper
// between ntc and a detachable QEMU. It dies with this process: its
// parent-death signal is SIGKILL.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once reaped
	err  error         // how it ended; valid once done is closed
}

// StartChild starts cmd with SIGKILL as its parent-death signal (added to
// cmd.SysProcAttr, which may set a process group, a session or
// credentials) and reaps it when it exits.
//
// The parent-death signal fires when the thread that forked exits, not
// the process (prctl(2), syscall.SysProcAttr.Pdeathsig): the fork happens
// on a goroutine locked to its thread, which lives until the child is
// reaped, so a caller on any goroutine (one that locks its thread to enter
// a network namespace and ends, say) cannot take the child down early.
func StartChild(cmd *exec.Cmd) (*Child, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	c := &Child{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return c, nil
}

// PID is the child's process ID.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is how the child ended (nil: status 0); valid once Done is closed.
func (c *Child) Err() error { return c.err }

// Signal sends the child sig; os.ErrProcessDone once it has been reaped.
func (c *Child) Signal(sig syscall.Signal) error { return c.cmd.Process.Signal(sig) }

// Stop sends SIGTERM (QEMU then flushes and closes its images) and waits
// for the child to exit; if ctx ends first, it kills it. Stopping a child
// that has exited returns nil.
func (c *Child) Stop(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if err := c.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		c.Kill()
		return fmt.Errorf("no exit on SIGTERM, killed: %w", ctx.Err())
	}
}

// Kill kills the child at once and waits until it is reaped.
func (c *Child) Kill() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if err := c.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-c.done
	return nil
}
