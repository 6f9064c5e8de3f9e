// Package procstat reads a process's resource figures from /proc.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PeakRSS returns the peak resident memory (VmHWM) of the live process pid,
// or of this process when pid is 0; 0 when it cannot be read. Unlike the
// rusage of a child that was started with fork and exec, it does not count
// the memory the child shared with its parent before the exec.
func PeakRSS(pid int) int64 {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// HugePagesFree returns the bytes of 2 MiB huge pages this host has free
// (HugePages_Free in /proc/meminfo); 0 when its huge pages are of another
// size or it cannot be read.
func HugePagesFree() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var free, size int64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "HugePages_Free:":
			free, _ = strconv.ParseInt(f[1], 10, 64)
		case "Hugepagesize:":
			size, _ = strconv.ParseInt(f[1], 10, 64) // kB
		}
	}
	if size != 2048 {
		return 0
	}
	return free << 21
}
