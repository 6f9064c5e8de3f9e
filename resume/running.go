package resume

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Running returns the pid of the QEMU a resume started in work dir (its
// -pidfile), if that process still runs QEMU: a copy started earlier, by a
// hand-off that is being run again, say.
func Running(work string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(work, pidName))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || !strings.HasPrefix(string(comm), "qemu-system") {
		return 0, false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := strings.LastIndexByte(string(stat), ')'); err != nil || (i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z') {
		return 0, false // gone, or a zombie
	}
	return pid, true
}
