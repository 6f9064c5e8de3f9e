package capture

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/testguest"
)

// BenchmarkCheckpoint takes b.N checkpoints of a 256 MiB guest that writes
// 1 MiB of its disk every second, one after another, and reports the guest
// pause (QEMU's STOP to RESUME) at the median and the 99th percentile, the
// duration, and disk bytes read per byte changed; for each method, with
// guest RAM on huge pages (where the host has them free), shared (a
// preallocated memfd) and private (QEMU's default for -m, and the test
// guest's), idle and rewriting 64 MiB of RAM. Run it with -benchtime 20x.
func BenchmarkCheckpoint(b *testing.B) {
	for _, m := range []Method{MethodPrecopy, MethodBackground} {
		for _, mem := range []testguest.Memory{testguest.MemoryHugePages, testguest.MemoryShared, testguest.MemoryPrivate} {
			for _, busy := range []int{0, 64} {
				name := string(m) + "/" + string(mem) + "/idle"
				if busy > 0 {
					name = string(m) + "/" + string(mem) + "/busy-64MiB"
				}
				b.Run(name, func(b *testing.B) {
					if m == MethodBackground {
						skipUnlessUserfaultfd(b)
					}
					if free := testguest.HugePagesFree(); mem == testguest.MemoryHugePages && free < testguest.DefaultMemoryMiB {
						b.Skipf("%d MiB of huge pages free, the guest needs %d (as root: echo %d > /proc/sys/vm/nr_hugepages)",
							free, testguest.DefaultMemoryMiB, testguest.DefaultMemoryMiB/2)
					}
					benchmarkCheckpoint(b, m, mem, busy)
				})
			}
		}
	}
}

func benchmarkCheckpoint(b *testing.B, method Method, mem testguest.Memory, busy int) {
	vm := startGuest(b, testguest.StartOptions{DiskBusyMiB: 1, BusyMiB: busy, Memory: mem})
	cfg := Config{QMP: vm.QMPPath(), Dir: b.TempDir(), Method: method}
	if testing.Verbose() {
		cfg.Logger = testLogger(b)
	}
	// The first checkpoint reads everything; the ones measured are
	// incremental.
	checkpointTB(b, cfg)
	var pauses, durations []float64
	var read, changed int64
	for b.Loop() {
		res := checkpointTB(b, cfg)
		pauses = append(pauses, res.Stats.GuestPauseMS)
		b.Logf("pause %.1f ms: %s", res.Stats.GuestPauseMS, formatSteps(res.Stats.PauseSteps))
		durations = append(durations, res.Stats.DurationMS)
		read += res.Stats.DiskBytesRead
		changed += res.Stats.DiskBytesChanged
	}
	b.ReportMetric(percentile(pauses, 50), "pause-p50-ms")
	b.ReportMetric(percentile(pauses, 99), "pause-p99-ms")
	b.ReportMetric(slices.Max(pauses), "pause-max-ms")
	b.ReportMetric(percentile(durations, 50), "duration-p50-ms")
	if changed > 0 {
		b.ReportMetric(float64(read)/float64(changed), "disk-read/changed")
	}
	b.ReportMetric(0, "ns/op")
}

// percentile returns the p-th percentile of xs (nearest rank).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// BenchmarkRAMDelta takes two checkpoints of an idle 256 MiB guest 10 s
// apart and reports the RAM bytes the second adds to the repository
// (pages keyed by content) against the page-level oracle (4 KiB pages whose
// content the first checkpoint does not hold) and two baselines:
// content-defined chunks (64 KiB average) over the raw migration stream,
// and over the page images.
// With the precopy method the "raw stream" is the stream rebuilt from the
// checkpoint, which sends each page once with its final content.
func BenchmarkRAMDelta(b *testing.B) {
	for _, m := range []Method{MethodBackground, MethodPrecopy} {
		b.Run(string(m), func(b *testing.B) {
			if m == MethodBackground {
				skipUnlessUserfaultfd(b)
			}
			benchmarkRAMDelta(b, m)
		})
	}
}

func benchmarkRAMDelta(b *testing.B, method Method) {
	for b.Loop() {
		vm := startGuest(b, testguest.StartOptions{})
		cfg := Config{QMP: vm.QMPPath(), Dir: b.TempDir(), Method: method}
		m1 := checkpointTB(b, cfg).Manifest
		time.Sleep(10 * time.Second)
		res2 := checkpointTB(b, cfg)
		m2 := res2.Manifest
		repo := readRepo(b, cfg.Dir)

		oracle := pageOracle(b, repo, m1, m2)
		raw := cdcDelta(b, func(ctx context.Context, m *Manifest, w io.Writer) error {
			s, src, err := repo.Stream(ctx, m)
			if err != nil {
				return err
			}
			return migstream.Join(ctx, w, s, src)
		}, m1, m2)
		images := cdcDelta(b, func(ctx context.Context, m *Manifest, w io.Writer) error {
			for _, r := range m.RAM {
				img, err := repo.Image(ctx, m.Seq, r.Index)
				if err != nil {
					return err
				}
				if _, err := io.Copy(w, io.NewSectionReader(img, 0, img.Size())); err != nil {
					return err
				}
			}
			return nil
		}, m1, m2)
		b.Logf("method %s: ntc stored %d new RAM bytes; oracle %d; CDC over the raw stream %d; CDC over page images %d",
			cfg.Method, res2.Stats.RAMBytesNew, oracle, raw, images)
		b.ReportMetric(float64(res2.Stats.RAMBytesNew)/(1<<20), "ntc-MiB")
		b.ReportMetric(float64(oracle)/(1<<20), "oracle-MiB")
		b.ReportMetric(float64(raw)/(1<<20), "cdc-raw-stream-MiB")
		b.ReportMetric(float64(images)/(1<<20), "cdc-page-images-MiB")
		if oracle > 0 {
			b.ReportMetric(float64(res2.Stats.RAMBytesNew)/float64(oracle), "ntc/oracle")
		}
		b.ReportMetric(0, "ns/op")
	}
}

// pageOracle counts the bytes of the distinct non-zero 4 KiB pages of m2's
// RAM whose content m1's RAM does not hold.
func pageOracle(b *testing.B, repo *Repository, m1, m2 *Manifest) int64 {
	have := map[chunk.ID]bool{}
	for _, r := range m1.RAM {
		x, err := repo.Index(m1.Seq, r.Index)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range x.Entries {
			if !e.Zero {
				have[e.ID] = true
			}
		}
	}
	var n int64
	for _, r := range m2.RAM {
		x, err := repo.Index(m2.Seq, r.Index)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range x.Entries {
			if !e.Zero && !have[e.ID] {
				have[e.ID] = true
				n += e.Length
			}
		}
	}
	return n
}

// cdcDelta indexes what write produces for m1 and m2 with 64 KiB-average
// content-defined chunks and returns the bytes of m2's chunks m1 lacks.
func cdcDelta(b *testing.B, write func(context.Context, *Manifest, io.Writer) error, m1, m2 *Manifest) int64 {
	ctx := b.Context()
	index := func(m *Manifest) *chunk.Index {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(write(ctx, m, pw)) }()
		data, err := io.ReadAll(pr)
		if err != nil {
			b.Fatal(err)
		}
		x, _, err := chunk.Build(ctx, chunk.Bytes(data), chunk.CDCWithAverage(64<<10), chunk.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return x
	}
	d, err := chunk.Compare(index(m1), index(m2))
	if err != nil {
		b.Fatal(err)
	}
	return d.NewBytes
}
