package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// diskUsage is the space the files under dir take on disk (allocated
// blocks: a sparse image counts what it holds).
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestServeImagesOnDemand: the same two pushes into a 'serve --images
// commit' and a 'serve --images on-demand': the on-demand repository has
// no image file and takes less disk by at least the image's size (the
// packs only); ls names no path for its images; restore gives back both
// versions byte for byte from the packs.
func TestServeImagesOnDemand(t *testing.T) {
	office, home := newNode(t), newNode(t)
	atCommit, onDemand := t.TempDir(), t.TempDir()
	addrCommit, _ := serve(t, home, atCommit, office.id)
	addrOnDemand, _ := serveWith(t, home, onDemand, []string{"--images", "on-demand"}, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	const size = 32 << 20
	data := randomFile(t, img, size, 21)
	first := slices.Clone(data)
	for _, addr := range []string{addrCommit, addrOnDemand} {
		if _, err := push(t, t.Context(), office, addr, home.id, img); err != nil {
			t.Fatal(err)
		}
	}
	changed, _ := scramble(data, 8, 22)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{addrCommit, addrOnDemand} {
		res, err := push(t, t.Context(), office, addr, home.id, img, "--changed", changed)
		if err != nil {
			t.Fatal(err)
		}
		if res.Version != 2 {
			t.Fatalf("second push: %+v", res)
		}
	}

	images := filepath.Join(onDemand, "sets", "disk.img", "images")
	if ents, err := os.ReadDir(images); err == nil && len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("the on-demand receiver wrote %v", names)
	}
	if _, err := os.Stat(filepath.Join(atCommit, "sets", "disk.img", "images", "disk.img")); err != nil {
		t.Fatalf("the receiver at commit wrote no image: %v", err)
	}
	duCommit, duOnDemand := diskUsage(t, atCommit), diskUsage(t, onDemand)
	packs := diskUsage(t, filepath.Join(onDemand, "packs"))
	t.Logf("disk used after two pushes of a %d MiB image: --images commit %d bytes, --images on-demand %d bytes (%d in packs), %.2fx",
		size>>20, duCommit, duOnDemand, packs, float64(duOnDemand)/float64(duCommit))
	if duCommit-duOnDemand < size {
		t.Errorf("on demand the repository takes %d bytes, at commit %d: want at least the image's %d less", duOnDemand, duCommit, size)
	}

	ls := lsStore(t, home, onDemand)["disk.img"]
	if ls.Current == nil || ls.Current.Version != 2 || len(ls.Current.Images) != 1 || ls.Current.Images[0].Path != "" {
		t.Fatalf("ls of the on-demand repository: %+v", ls.Current)
	}
	if got := restoreFrom(t, home, onDemand, "disk.img", "disk.img", 1); !bytes.Equal(got, first) {
		t.Error("version 1 restored from the on-demand repository differs from what was pushed")
	}
	if got := restoreFrom(t, home, onDemand, "disk.img", "disk.img", 0); !bytes.Equal(got, data) {
		t.Error("version 2 restored from the on-demand repository differs from what was pushed")
	}
}

// TestServeImagesRefusesUnknownMode: a typo in --images is a usage error
// that leaves no repository behind.
func TestServeImagesRefusesUnknownMode(t *testing.T) {
	home := newNode(t)
	store := filepath.Join(t.TempDir(), "store")
	out, err := home.cmd(t.Context(), "serve", "--listen", "127.0.0.1:0", "--store", store, "--allow", home.id, "--images", "lazy").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !bytes.Contains(out, []byte("on-demand")) {
		t.Fatalf("serve --images lazy: %v: %s", err, out)
	}
	if _, err := os.Stat(store); err == nil {
		t.Errorf("serve --images lazy created %s", store)
	}
}
