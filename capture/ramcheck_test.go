package capture

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ntc-project/ntc/internal/testguest"

	"github.com/ntc-project/ntc/qemu"
)

// TestRAMIsTheGuestsAtTheInstant compares, page by page, the RAM that
// checkpoints of the busy guest recorded (MethodAuto) with the guest's
// physical memory dumped (pmemsave) inside each checkpoint's pause. A
// precopy migration under TCG on QEMU before 9.0 misses writes: on QEMU 7.2
// two of four such checkpoints held stale kernel pages, and a guest
// restored from one panicked.
func TestRAMIsTheGuestsAtTheInstant(t *testing.T) {
	vm := startGuest(t, testguest.StartOptions{BusyMiB: 32, DiskBusyMiB: 4})
	if s, err := qemu.Dial(t.Context(), vm.QMPPath(), qemu.DialOptions{}); err != nil {
		t.Fatal(err)
	} else {
		lose := precopyLosesWrites(t.Context(), s)
		s.Close()
		if lose {
			skipUnlessUserfaultfd(t) // MethodAuto falls back to precopy without it
		}
	}
	dir := t.TempDir()
	dump := filepath.Join(dir, "pmem")
	const size = testguest.DefaultMemoryMiB << 20
	for k := 1; k <= 4; k++ {
		cfg := testConfig(t, vm, filepath.Join(dir, "repo"))
		cfg.afterStop = func(s *qemu.Session) error {
			return s.Run(t.Context(), "pmemsave", map[string]any{"val": 0, "size": size, "filename": dump}, nil)
		}
		res := checkpointTB(t, cfg)
		r, err := OpenRepositoryForReading(cfg.Dir, DefaultSet)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for _, b := range res.Manifest.RAM {
			if b.Name != "pc.ram" {
				continue
			}
			img, err := r.Image(t.Context(), res.Manifest.Seq, b.Index)
			if err != nil {
				t.Fatal(err)
			}
			got = make([]byte, size)
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
		}
		r.Close()
		if got == nil {
			t.Fatalf("checkpoint %d has no pc.ram block", res.Manifest.Seq)
		}
		want, err := os.ReadFile(dump)
		if err != nil {
			t.Fatal(err)
		}
		var diff []string
		for off := 0; off < size; off += 4096 {
			if off >= 0xa0000 && off < 0x100000 {
				continue // VGA window and ROMs: not pc.ram at these addresses
			}
			if !bytes.Equal(got[off:off+4096], want[off:off+4096]) {
				diff = append(diff, fmt.Sprintf("%#x", off))
			}
		}
		if len(diff) > 0 {
			t.Fatalf("checkpoint %d (%s): %d pages of RAM differ from the guest's in the pause, first %v",
				res.Manifest.Seq, res.Manifest.Method, len(diff), diff[:min(len(diff), 8)])
		}
		waitTicking(t, vm, 2)
	}
}

func TestTCGDirtyBug(t *testing.T) {
	for _, tc := range []struct{ atLeast90, kvm, want bool }{
		{false, false, true}, {false, true, false}, {true, false, false}, {true, true, false},
	} {
		if got := tcgDirtyBug(tc.atLeast90, tc.kvm); got != tc.want {
			t.Errorf("tcgDirtyBug(QEMU ≥ 9.0 %v, KVM %v) = %v, want %v", tc.atLeast90, tc.kvm, got, tc.want)
		}
	}
}
