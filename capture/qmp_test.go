package capture

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ntc-project/ntc/qemu/qmptest"
)

// TestCheckpointRefusesStoppedGuest: a guest that is not running is refused
// with a reason, and nothing is changed (the fake QMP answers only the two
// queries a refusal needs).
func TestCheckpointRefusesStoppedGuest(t *testing.T) {
	for _, tc := range []struct{ status, says string }{
		{"paused", "the guest is paused; ntc leaves it paused"},
		{"shutdown", "the guest has stopped (shutdown)"},
		{"guest-panicked", "the guest has stopped (guest-panicked)"},
		{"prelaunch", "has not started yet"},
		{"postmigrate", "migrated away"},
	} {
		t.Run(tc.status, func(t *testing.T) {
			var mu sync.Mutex
			var cmds []string
			qmp := qmptest.Start(t, func(r qmptest.Request) []string {
				cmd := r.Command
				mu.Lock()
				cmds = append(cmds, cmd)
				mu.Unlock()
				switch cmd {
				case "query-migrate":
					return []string{`{"return": {}}`}
				case "query-status":
					return []string{`{"return": {"status": "` + tc.status + `", "running": false}}`}
				}
				return []string{`{"error": {"class": "GenericError", "desc": "unexpected"}}`}
			})
			dir := t.TempDir()
			_, err := Checkpoint(t.Context(), Config{QMP: qmp, Dir: dir})
			if !errors.Is(err, ErrGuestNotRunning) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %v, want ErrGuestNotRunning saying %q", err, tc.says)
			}
			mu.Lock()
			if len(cmds) != 2 {
				t.Errorf("commands sent: %v, want only the two queries", cmds)
			}
			mu.Unlock()
			if st, _ := os.Stat(filepath.Join(dir, stateFile)); st != nil {
				t.Error("state.json written for a refused checkpoint")
			}
		})
	}
}
