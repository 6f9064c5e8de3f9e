package resume

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ntc-project/ntc/qemu"
)

// Running returns the pid of the QEMU a resume started in work dir (its
// -pidfile), if that process still runs QEMU (qemu.RunningQEMU): a copy
// started earlier, by a hand-off that is being run again, say.
func Running(work string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(work, pidName))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	if _, ok := qemu.RunningQEMU(pid); !ok {
		return 0, false
	}
	return pid, true
}
