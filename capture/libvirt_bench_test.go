package capture

import (
	"slices"
	"testing"

	"github.com/ntc-project/ntc/internal/libvirttest"
	"github.com/ntc-project/ntc/internal/testguest"
)

// BenchmarkLibvirtPause compares the guest pause (QEMU's STOP to RESUME)
// of checkpoints through libvirt with checkpoints of the same guest image
// run by QEMU directly, measured in the same run: both guests run at once
// (same memory backing: huge pages if 512 MiB of them are free, private
// otherwise), each writing 1 MiB of its disk a second, and every iteration
// checkpoints each three times, alternating. It reports the pause at the
// median and the maximum for both, their ratio, and the part of the pause
// that snapshots the disks (from QEMU's STOP to ntc's "disks
// snapshotted"): a QMP transaction against a libvirt disk-only snapshot.
// Run it with -benchtime 1x (three checkpoints each) or more.
func BenchmarkLibvirtPause(b *testing.B) {
	libvirttest.Daemon(b)
	libvirttest.RequireUserfaultfd(b)
	skipUnlessUserfaultfd(b)
	mem := testguest.PreferHugePages(2 * testguest.DefaultMemoryMiB)
	b.Logf("guest RAM: %s", mem)
	vm := startGuest(b, testguest.StartOptions{DiskBusyMiB: 1, Memory: mem})
	d := libvirttest.StartDomain(b, libvirttest.DomainOptions{DiskBusyMiB: 1, Memory: mem})
	direct := Config{QMP: vm.QMPPath(), Dir: b.TempDir()}
	viaLibvirt := Config{Domain: d.Name, Connect: libvirttest.URI, Dir: b.TempDir()}

	var pauses, snaps [2][]float64 // 0: direct, 1: libvirt
	for b.Loop() {
		for range 3 {
			for i, cfg := range []Config{direct, viaLibvirt} {
				res := checkpointTB(b, cfg)
				pauses[i] = append(pauses[i], res.Stats.GuestPauseMS)
				snaps[i] = append(snaps[i], stepMS(res.Stats.PauseSteps, "disks snapshotted"))
				b.Logf("%s checkpoint %d: pause %.1f ms: %s", []string{"qmp", "libvirt"}[i], res.Manifest.Seq,
					res.Stats.GuestPauseMS, formatSteps(res.Stats.PauseSteps))
			}
			waitTicking(b, vm, 1)
			waitTicking(b, d, 1)
		}
	}
	for i, name := range []string{"qmp", "libvirt"} {
		b.ReportMetric(percentile(pauses[i], 50), name+"-pause-p50-ms")
		b.ReportMetric(slices.Max(pauses[i]), name+"-pause-max-ms")
		b.ReportMetric(percentile(snaps[i], 50), name+"-snapshot-p50-ms")
	}
	b.ReportMetric(percentile(pauses[1], 50)/percentile(pauses[0], 50), "libvirt/qmp-pause-p50")
	b.ReportMetric(0, "ns/op")
}

// stepMS returns when the pause step named name happened, in ms after
// QEMU's STOP (-1 if it is not there).
func stepMS(steps []PauseStep, name string) float64 {
	for _, s := range steps {
		if s.Step == name {
			return s.MS
		}
	}
	return -1
}
