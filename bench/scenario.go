package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ntc-project/ntc/bench/debimg"
)

// Scenario is a pair of image versions: what the receiver holds, and what
// the sender has now.
type Scenario struct {
	Name string
	Old  string // path of the version the receiver holds
	New  string // path of the version to send
	// Changed lists the ranges of New that differ from Old, when known
	// (as capture knows a VM's writes); tools that can use it get it.
	Changed []Extent
	// Oracle is the zstd-compressed size of the 4 KiB blocks of New that
	// differ from Old: the least any tool must send.
	Oracle int64
	// ChangedBytes is the size of those blocks, uncompressed.
	ChangedBytes int64
	// DedupOracle, when known (debian), is the zstd-compressed size of the
	// 4 KiB blocks of New found nowhere in Old nor earlier in New
	// (debimg.DedupOracle): the least a deduplicating tool must send.
	DedupOracle int64
	// Files are the files rsync and a full copy send: for image scenarios
	// the one image (Old, New), for VM scenarios each checkpoint's
	// migration stream and raw disk.
	Files []FilePair
	// VM is set for the VM scenarios (see PrepareVM).
	VM *VMState
}

// FilePair is one file of a scenario: its old version, which the receiver
// holds, and its new one, both to be found under Name on each side.
type FilePair struct {
	Name     string
	Old, New string
}

// ScenarioNames lists the scenarios Prepare knows. "debian" builds (once,
// then from its cache) a Debian root file system image and the same image
// after packages were installed into it: it needs root and mmdebstrap.
// vm-idle and vm-busy are the test guest checkpointed twice (PrepareVM):
// they need root and QEMU.
var ScenarioNames = []string{"random-1pct", "random-10pct", "debian", ScenarioVMIdle, ScenarioVMBusy}

// IsVM reports whether the named scenario is a VM scenario (PrepareVM
// makes it, not Prepare).
func IsVM(name string) bool { return name == ScenarioVMIdle || name == ScenarioVMBusy }

// DefaultScenarios run when none are named: the quick ones.
var DefaultScenarios = []string{"random-1pct", "random-10pct"}

// Prepare makes the images of the named scenario in dir.
func Prepare(ctx context.Context, name, dir string, size int64) (*Scenario, error) {
	var frac float64
	switch name {
	case "debian":
		p, err := debimg.Build(ctx, debimg.Options{})
		if err != nil {
			return nil, fmt.Errorf("debian scenario: %w", err)
		}
		s := &Scenario{Name: name, Old: p.Old, New: p.New, Oracle: p.Oracle, ChangedBytes: p.ChangedBytes, DedupOracle: p.DedupOracle}
		for _, r := range p.Changed {
			s.Changed = append(s.Changed, Extent{Off: r.Off, Len: r.Len})
		}
		s.Files = []FilePair{{Name: imageName, Old: s.Old, New: s.New}}
		return s, nil
	case "random-1pct":
		frac = 0.01
	case "random-10pct":
		frac = 0.10
	default:
		return nil, fmt.Errorf("unknown scenario %q (have %s)", name, strings.Join(ScenarioNames, ", "))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Scenario{Name: name, Old: filepath.Join(dir, name+"-old.img"), New: filepath.Join(dir, name+"-new.img")}
	if err := WriteRandom(s.Old, size, 1); err != nil {
		return nil, err
	}
	if err := copyFile(s.Old, s.New); err != nil {
		return nil, err
	}
	ext, oracle, err := RewriteScattered(s.New, frac, 64<<10, 2)
	if err != nil {
		return nil, err
	}
	s.Changed, s.Oracle = ext, oracle
	s.Files = []FilePair{{Name: imageName, Old: s.Old, New: s.New}}
	for _, e := range ext {
		s.ChangedBytes += e.Len
	}
	return s, ctx.Err()
}

// imageName is the image's file name on both sides in the image scenarios.
const imageName = "disk.img"

// copyFile copies src to dst keeping holes.
func copyFile(src, dst string) error {
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s %s: %v: %s", src, dst, err, out)
	}
	return nil
}
