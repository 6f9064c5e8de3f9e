package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRestore pushes two versions of a sparse image through real
// processes and restores each: raw files are the images byte for byte and
// sparse, qcow2 converts to the same content, and bad requests say what to
// do.
func TestRestore(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	v1 := randomFile(t, img, 8<<20, 3)
	clear(v1[2<<20 : 6<<20]) // 4 MiB of zeros: a hole when restored
	os.WriteFile(img, v1, 0o644)
	if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", "vm"); err != nil {
		t.Fatal(err)
	}
	v2 := bytes.Clone(v1)
	copy(v2[7<<20:], bytes.Repeat([]byte("v2"), 1000))
	os.WriteFile(img, v2, 0o644)
	if _, err := push(t, t.Context(), office, addr, home.id, img, "--name", "vm"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args []string
		want []byte
	}{
		{[]string{"vm", "--image", "disk.img"}, v2},
		{[]string{"vm", "--image", "disk.img", "--version", "1"}, v1},
	} {
		out := filepath.Join(dir, "restored.raw")
		os.Remove(out)
		code, _, errs := ntc(t, t.Context(), append([]string{"restore", "--store", store, "--to", out}, tc.args...)...)
		if code != 0 {
			t.Fatalf("restore %v: exit %d: %s", tc.args, code, errs)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("restore %v: content differs", tc.args)
		}
		var st syscall.Stat_t
		syscall.Stat(out, &st)
		fi, _ := os.Stat(out)
		if st.Blocks*512 > 5<<20 || fi.Mode().Perm() != 0o600 {
			t.Errorf("restored file: %d bytes on disk for 4 MiB of data, mode %v", st.Blocks*512, fi.Mode().Perm())
		}
	}

	if _, err := exec.LookPath("qemu-img"); err == nil {
		q := filepath.Join(dir, "restored.qcow2")
		code, _, errs := ntc(t, t.Context(), "restore", "vm", "--store", store, "--image", "disk.img", "--to", q, "--format", "qcow2")
		if code != 0 {
			t.Fatalf("restore qcow2: exit %d: %s", code, errs)
		}
		raw := filepath.Join(dir, "v2.raw")
		os.WriteFile(raw, v2, 0o600)
		if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", q, raw).CombinedOutput(); err != nil {
			t.Errorf("qemu-img compare: %v: %s", err, out)
		}
		if ents, _ := filepath.Glob(filepath.Join(dir, ".restored*")); len(ents) != 0 {
			t.Errorf("temporary files left: %v", ents)
		}
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"vm", "--image", "disk.img", "--to", img}, exitUsage, "--force"},
		{[]string{"vm", "--image", "nope", "--to", filepath.Join(dir, "x")}, exitError, "it has disk.img"},
		{[]string{"--image", "disk.img", "--to", filepath.Join(dir, "x")}, exitUsage, "name the SET"},
		{[]string{"vm", "--image", "disk.img", "--to", filepath.Join(dir, "x"), "--format", "vmdk"}, exitUsage, "raw or qcow2"},
	} {
		code, _, errs := ntc(t, t.Context(), append([]string{"restore", "--store", store}, tc.args...)...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("restore %v: exit %d, %q; want %d mentioning %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
}
