package resume

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mdweEnv makes the test binary a launcher that turns on the kernel's
// memory-deny-write-execute for itself (inherited across exec, as
// systemd's MemoryDenyWriteExecute= does for a service) and then execs
// the command in its arguments.
const mdweEnv = "NTC_TEST_MDWE_EXEC"

// prSetMDWE and prMDWERefuseExecGain are PR_SET_MDWE and
// PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3).
const (
	prSetMDWE            = 65
	prMDWERefuseExecGain = 1
)

func mdweExec(args []string) int {
	if err := unix.Prctl(prSetMDWE, prMDWERefuseExecGain, 0, 0, 0); err != nil {
		os.Stderr.WriteString("PR_SET_MDWE: " + err.Error() + "\n")
		return 3
	}
	err := syscall.Exec(args[0], args, os.Environ())
	os.Stderr.WriteString("exec: " + err.Error() + "\n")
	return 4
}

// TestTCGStartsUnderMemoryDenyWriteExecute starts the real QEMU with the
// accelerator option the plan gives a TCG guest, under the protection
// ntc-serve.service puts on the copies it resumes: QEMU must come up
// (answer QMP and quit), where TCG's unsplit code buffer is refused.
func TestTCGStartsUnderMemoryDenyWriteExecute(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed (make deps installs it)")
	}
	p, err := plan(guestManifest(), testHost)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(p.Argv, "-accel")
	if i < 0 || i+1 >= len(p.Argv) {
		t.Fatalf("the plan for a TCG guest has no -accel: %q", p.Argv)
	}
	accel := p.Argv[i+1]
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := func(accel string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, self, qemu, "-machine", "none", "-accel", accel,
			"-nodefaults", "-display", "none", "-S", "-qmp", "stdio")
		cmd.Env = append(os.Environ(), mdweEnv+"=1")
		cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	out, err := run("tcg")
	if err == nil {
		t.Skipf("this kernel or QEMU lets TCG run unsplit under MDWE, nothing to show (output %q)", out)
	}
	if strings.Contains(out, "PR_SET_MDWE") {
		t.Skipf("the kernel has no PR_SET_MDWE: %s", out)
	}
	t.Logf("unsplit TCG under MDWE: %v: %s", err, strings.TrimSpace(out))
	if out, err := run(accel); err != nil {
		t.Fatalf("QEMU with the plan's -accel %s under MDWE: %v\n%s", accel, err, out)
	}
}
