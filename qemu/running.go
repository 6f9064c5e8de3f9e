package qemu

import (
	"bytes"
	"fmt"
	"os"
)

// RunningQEMU returns process pid when it is a QEMU system emulator
// (Process.IsQEMU) that has not exited: a process that is gone, a zombie
// (exited, not yet reaped) or another program is not.
func RunningQEMU(pid int) (Process, bool) {
	if pid <= 0 {
		return Process{}, false
	}
	p, err := LookupProcess(pid)
	if err != nil || !p.IsQEMU() {
		return Process{}, false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || statState(stat) == 'Z' {
		return Process{}, false
	}
	return p, true
}

// statState returns field 3 (state) of a /proc/PID/stat line, 0 if the
// line is malformed: 'R', 'S', …, 'Z' for a zombie.
func statState(stat []byte) byte {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0
	}
	return stat[i+2]
}
