package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The main goroutine keeps the main thread, which cannot end: the test
// goroutines below then never run on it.
func init() { runtime.LockOSThread() }

// TestChildOutlivesTheStartingThread: a child started from a goroutine
// that locks its thread and ends (the thread exits with it) keeps running,
// since the parent-death signal is tied to StartChild's own thread; Stop
// ends it with SIGTERM and reaps it.
func TestChildOutlivesTheStartingThread(t *testing.T) {
	type started struct {
		c   *Child
		tid int
		err error
	}
	ch := make(chan started)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		c, err := StartChild(exec.Command("sleep", "600"))
		ch <- started{c, unix.Gettid(), err}
	}()
	s := <-ch
	if s.err != nil {
		t.Fatal(s.err)
	}
	t.Cleanup(func() { s.c.Kill() })
	if s.tid == os.Getpid() {
		t.Fatal("started on the main thread, which never ends")
	}
	// Await the end of the starting thread.
	task := fmt.Sprintf("/proc/self/task/%d", s.tid)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d still exists", s.tid)
		}
		runtime.Gosched()
	}
	select {
	case <-s.c.Done():
		t.Fatalf("the child died with the thread that started it: %v", s.c.Err())
	default:
	}
	if err := s.c.Signal(0); err != nil {
		t.Fatalf("child %d: %v", s.c.PID(), err)
	}
	if err := s.c.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if !errors.As(s.c.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("child ended with %v, want SIGTERM", s.c.Err())
	}
	if err := s.c.Stop(t.Context()); err != nil || s.c.Kill() != nil {
		t.Errorf("Stop or Kill of an ended child: %v", err)
	}
}

func TestStartChildFails(t *testing.T) {
	_, err := StartChild(exec.Command("/nonexistent/qemu-system-x86_64"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "start /nonexistent/qemu-system-x86_64") {
		t.Errorf("StartChild of a missing binary: %v", err)
	}
}
