package link

import (
	"bytes"
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

	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/internal/filelock"
)

// A link named ntc-link-PID-N owns the namespaces ntc-link-PID-N-a and -b
// and holds an exclusive flock on lockDir/ntc-link-PID-N.lock while it
// lives. The lock, not the PID, tells a live link from the remains of a
// crashed process: the kernel drops the lock when its holder dies, PIDs get
// reused.
const (
	namePrefix = "ntc-link-"
	lockDir    = "/run/ntc-link"
)

// ip runs iproute2's ip and returns its output; a failure carries what ip said.
func ip(ctx context.Context, args ...string) ([]byte, error) {
	return ipStdin(ctx, nil, args...)
}

// ipBatch runs ip commands, one a line, with one ip process: ip's start-up
// costs more than most of its commands. In namespace ns if it is not "".
func ipBatch(ctx context.Context, ns string, cmds ...[]string) error {
	var b bytes.Buffer
	for _, c := range cmds {
		b.WriteString(strings.Join(c, " "))
		b.WriteByte('\n')
	}
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	_, err := ipStdin(ctx, &b, args...)
	return err
}

func ipStdin(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, "ip", args...)
	c.Stdin = stdin
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// parseName splits a namespace or lock name into the link's base name and
// its owner's PID.
func parseName(name string) (base string, pid int, ok bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return "", 0, false
	}
	rest = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(rest, ".lock"), "-a"), "-b")
	p, n, ok := strings.Cut(rest, "-")
	if !ok {
		return "", 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return "", 0, false
	}
	if _, err := strconv.ParseUint(n, 10, 64); err != nil {
		return "", 0, false
	}
	return namePrefix + rest, pid, true
}

func lockPath(base string) string { return filepath.Join(lockDir, base+".lock") }

// lockLink creates and locks base's lock file; the lock lasts as long as the
// returned file stays open.
func lockLink(base string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, err
	}
	return filelock.TryLock(lockPath(base))
}

// netnsDir is where ip netns keeps its namespaces, one bind mount a name.
const netnsDir = "/var/run/netns"

// netnsList returns the names of the network namespaces `ip netns` knows.
func netnsList() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, err
}

// netnsPids lists the processes in the named namespace, as ip netns pids does.
func netnsPids(ns string) []int {
	var want unix.Stat_t
	if unix.Stat(filepath.Join(netnsDir, ns), &want) != nil {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteNetns kills whatever still runs in the namespaces, then deletes
// those that exist. Those processes were started there through this link and
// have lost their network; left alone they would keep a namespace alive,
// unnamed.
func deleteNetns(ctx context.Context, names ...string) error {
	var cmds [][]string
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			continue
		}
		for _, pid := range netnsPids(ns) {
			if pid != os.Getpid() {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		cmds = append(cmds, []string{"netns", "delete", ns})
	}
	if len(cmds) == 0 {
		return nil
	}
	return ipBatch(ctx, "", cmds...)
}

// cleanStale deletes the namespaces and lock files of links whose process
// died without closing them. It is best effort: what it cannot delete now, a
// later call tries again.
func cleanStale(ctx context.Context) {
	owned := map[string][]string{} // base → its namespaces
	names, _ := netnsList()
	for _, ns := range names {
		if base, _, ok := parseName(ns); ok {
			owned[base] = append(owned[base], ns)
		}
	}
	if entries, err := os.ReadDir(lockDir); err == nil {
		for _, e := range entries {
			if base, _, ok := parseName(e.Name()); ok && strings.HasSuffix(e.Name(), ".lock") {
				if _, seen := owned[base]; !seen {
					owned[base] = nil
				}
			}
		}
	}
	for base, nss := range owned {
		release, dead := ownerDead(base)
		if !dead {
			continue
		}
		deleteNetns(ctx, nss...)
		os.Remove(lockPath(base))
		release()
	}
}

// ownerDead reports whether the process that created the link base is gone.
// If so, it holds base's lock until release is called.
func ownerDead(base string) (release func(), dead bool) {
	_, pid, _ := parseName(base)
	if pid == os.Getpid() {
		return nil, false
	}
	f, err := os.OpenFile(lockPath(base), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		// The lock is created before the namespaces and removed after
		// them, so this is a cleaner that raced an Up or a Close: fall back
		// to the PID.
		return func() {}, unix.Kill(pid, 0) == unix.ESRCH
	}
	if err != nil {
		return nil, false
	}
	if err := filelock.TryLockFile(f); err != nil {
		f.Close()
		return nil, false // held: the owner lives
	}
	return func() { f.Close() }, true
}
