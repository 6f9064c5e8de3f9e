package resume

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ntc-project/ntc/internal/clonefile"
)

// BenchmarkLibvirtDiskCopy: what a libvirt copy's disk costs, by the way
// StartLibvirt makes it (makeDisk: a clone of the received raw image, a
// reflink where the filesystem allows, under a qcow2 overlay) against the
// way it made it before (qemu-img convert of the image to a qcow2 base,
// under the overlay), on images of the test guest's size (64 MiB, 2 MiB
// of data) and larger (1 GiB, 256 MiB of data). Reported: MB/s of the
// image's size, and the clone's speed-up over qemu-img convert measured in
// the same run.
func BenchmarkLibvirtDiskCopy(b *testing.B) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		b.Skip("qemu-img not found")
	}
	for _, sz := range []struct{ size, data int64 }{{64 << 20, 2 << 20}, {1 << 30, 256 << 20}} {
		img := filepath.Join(b.TempDir(), "disk.raw")
		var at []int64
		for off := int64(0); off < sz.data; off += 1 << 20 {
			at = append(at, off*(sz.size/sz.data)) // spread over the image
		}
		sparseImage(b, img, sz.size, at)
		name := fmt.Sprintf("%dMiB-%dMiBdata", sz.size>>20, sz.data>>20)
		convert := measureDisk(b, name+"/qemu-img-convert", img, sz.size, func(f *os.File, dst string) error {
			base := dst + ".base.qcow2"
			if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", f.Name(), base).CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", base, dst, fmt.Sprint(sz.size)).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		var method clonefile.Method
		clone := measureDisk(b, name+"/clone", img, sz.size, func(f *os.File, dst string) (err error) {
			method, err = makeDisk(b.Context(), f, dst)
			return err
		})
		if convert > 0 && clone > 0 {
			b.Logf("%s: clone (%s) %.2fx faster than qemu-img convert (%.1f ms against %.1f ms)", name, method, convert/clone, clone/1e6, convert/1e6)
		}
	}
}

// measureDisk runs make as a sub-benchmark and returns its ns per
// operation.
func measureDisk(b *testing.B, name, img string, size int64, make func(f *os.File, dst string) error) float64 {
	var ns float64
	b.Run(name, func(b *testing.B) {
		f, err := os.Open(img)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		b.SetBytes(size)
		dir := b.TempDir()
		i := 0
		for b.Loop() {
			i++
			if err := make(f, filepath.Join(dir, fmt.Sprintf("d%d.qcow2", i))); err != nil {
				b.Fatal(err)
			}
		}
		ns = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	return ns
}

// sparseImage writes a file of size bytes holding 1 MiB of random data at
// each offset in at, holes elsewhere.
func sparseImage(tb testing.TB, path string, size int64, at []int64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, off := range at {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
}
