package resume

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParseKeeperArgs(t *testing.T) {
	for _, c := range []struct {
		args    string
		fds     int
		uid     int // -1: no credentials
		argv    string
		wantErr bool
	}{
		{args: "-- qemu -S", uid: -1, argv: "qemu -S"},
		{args: "--fds 2 -- qemu", fds: 2, uid: -1, argv: "qemu"},
		{args: "--fds 1 --uid 64055 --gid 64055 -- qemu -m 1G", fds: 1, uid: 64055, argv: "qemu -m 1G"},
		{args: "--fds", wantErr: true},
		{args: "--fds -1 -- qemu", wantErr: true},
		{args: "--fds x -- qemu", wantErr: true},
		{args: "--exec 1 -- qemu", wantErr: true},
		{args: "--fds 1", wantErr: true},
		{args: "--fds 1 --", wantErr: true},
	} {
		cfg, err := ParseKeeperArgs(strings.Fields(c.args))
		if c.wantErr {
			if err == nil {
				t.Errorf("ParseKeeperArgs(%s) = %+v, want an error", c.args, cfg)
			}
			continue
		}
		uid := -1
		if cfg.Cred != nil {
			uid = int(cfg.Cred.Uid)
		}
		if err != nil || cfg.FDs != c.fds || uid != c.uid || strings.Join(cfg.Argv, " ") != c.argv {
			t.Errorf("ParseKeeperArgs(%s) = %+v (uid %d), %v", c.args, cfg, uid, err)
		}
	}
}

// keeping is a Keep running in a goroutine, on a stand-in for QEMU.
type keeping struct {
	control *io.PipeWriter
	status  *bufio.Reader
	pid     int
	done    chan struct{} // closed once Keep has returned err
	err     error
}

// wait returns what Keep returned.
func (k *keeping) wait() error {
	<-k.done
	return k.err
}

func keep(t *testing.T, ctx context.Context, argv ...string) *keeping {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Skip(err)
	}
	cr, cw := io.Pipe()
	sr, sw := io.Pipe()
	k := &keeping{control: cw, status: bufio.NewReader(sr), done: make(chan struct{})}
	go func() {
		k.err = Keep(ctx, KeeperConfig{Argv: argv}, cr, sw, io.Discard)
		close(k.done)
	}()
	t.Cleanup(func() {
		select {
		case <-k.done:
		default:
			if k.pid > 0 { // not yet reaped: Keep has not returned
				syscall.Kill(k.pid, syscall.SIGKILL)
			}
		}
		cw.Close()
		sr.Close()
		k.wait()
	})
	line, err := k.status.ReadString('\n')
	if k.pid, _ = strconv.Atoi(strings.TrimSpace(line)); err != nil || k.pid <= 0 {
		t.Fatalf("the keeper said %q (%v), want QEMU's pid", line, err)
	}
	return k
}

// TestKeep: the keeper hands on QEMU's end as its exit status, releases
// QEMU when told, and kills it when ntc goes away or its context ends.
func TestKeep(t *testing.T) {
	const killed = 128 + int(syscall.SIGKILL)
	t.Run("QEMU exits", func(t *testing.T) {
		k := keep(t, t.Context(), "sh", "-c", "exit 3")
		if err := k.wait(); KeeperExitCode(err) != 3 {
			t.Errorf("Keep = %v (exit code %d), want QEMU's status 3", err, KeeperExitCode(err))
		}
	})
	t.Run("ntc goes away", func(t *testing.T) {
		k := keep(t, t.Context(), "sleep", "60")
		k.control.Close()
		if err := k.wait(); KeeperExitCode(err) != killed {
			t.Errorf("Keep = %v (exit code %d), want QEMU killed", err, KeeperExitCode(err))
		}
	})
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		k := keep(t, ctx, "sleep", "60")
		cancel()
		err := k.wait()
		if !errors.Is(err, context.Canceled) || KeeperExitCode(err) != 125 {
			t.Errorf("Keep = %v (exit code %d), want context.Canceled, 125", err, KeeperExitCode(err))
		}
		if syscall.Kill(k.pid, 0) == nil {
			t.Errorf("QEMU (pid %d) runs after Keep returned", k.pid)
		}
	})
	t.Run("released", func(t *testing.T) {
		k := keep(t, t.Context(), "sleep", "60")
		if _, err := io.WriteString(k.control, "release\n"); err != nil {
			t.Fatal(err)
		}
		if line, err := k.status.ReadString('\n'); line != "released\n" || err != nil {
			t.Fatalf("the keeper said %q (%v), want released", line, err)
		}
		if rest, err := io.ReadAll(k.status); len(rest) != 0 || err != nil {
			t.Errorf("after released the status holds %q (%v), want its end", rest, err)
		}
		// Released, QEMU stays the keeper's to reap: ntc going away
		// no longer ends it.
		k.control.Close()
		if err := syscall.Kill(k.pid, 0); err != nil {
			t.Fatalf("QEMU (pid %d) after release and ntc's end: %v", k.pid, err)
		}
		syscall.Kill(k.pid, syscall.SIGKILL)
		if err := k.wait(); KeeperExitCode(err) != killed {
			t.Errorf("Keep = %v (exit code %d), want QEMU's end (killed)", err, KeeperExitCode(err))
		}
	})
}
