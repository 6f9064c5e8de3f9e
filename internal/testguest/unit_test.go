package testguest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

func TestParseDiskTick(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want int
		err  bool
	}{
		{"record", FormatDiskTick(42), 42, false},
		{"short read", []byte("disk tick 7\n"), 7, false},
		{"leftover after newline", []byte("disk tick 9\n0\n\x00"), 9, false},
		{"zero disk", make([]byte, DiskTickSize), 0, true},
		{"empty", nil, 0, true},
		{"no newline", []byte("disk tick 12"), 0, true},
		{"no digits", []byte("disk tick \n"), 0, true},
		{"not digits", []byte("disk tick 1x\n"), 0, true},
		{"too long", []byte("disk tick 1234567890123456789\n"), 0, true},
		{"other content", []byte("QFI\xfb"), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDiskTick(tc.in)
			if tc.err {
				if !errors.Is(err, ErrNoDiskTick) {
					t.Fatalf("ParseDiskTick(%q) = %d, %v; want ErrNoDiskTick", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDiskTick(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestReadDiskTickAt(t *testing.T) {
	img := append(FormatDiskTick(5), make([]byte, 4096)...)
	if n, err := ReadDiskTickAt(bytes.NewReader(img)); err != nil || n != 5 {
		t.Fatalf("ReadDiskTickAt = %d, %v; want 5", n, err)
	}
	if _, err := ReadDiskTickAt(bytes.NewReader(nil)); !errors.Is(err, ErrNoDiskTick) {
		t.Fatalf("ReadDiskTickAt(empty) error = %v; want ErrNoDiskTick", err)
	}
}

func FuzzParseDiskTick(f *testing.F) {
	f.Add(FormatDiskTick(1))
	f.Add([]byte("disk tick 123\n"))
	f.Add([]byte("disk tick \n"))
	f.Add(make([]byte, DiskTickSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseDiskTick(b)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseDiskTick(%q) = %d", b, n)
		}
		if m, err := ParseDiskTick(FormatDiskTick(n)); err != nil || m != n {
			t.Fatalf("round trip of %d = %d, %v", n, m, err)
		}
	})
}

func TestParseModinfo(t *testing.T) {
	b := []byte("license=GPL\x00depends=virtio,virtio_ring\x00\x00\x00name=virtio_blk\x00vermagic=6.1.0 SMP\x00depends=ignored\x00")
	info := parseModinfo(b)
	for k, want := range map[string]string{"license": "GPL", "depends": "virtio,virtio_ring", "name": "virtio_blk", "vermagic": "6.1.0 SMP"} {
		if info[k] != want {
			t.Errorf("info[%q] = %q; want %q", k, info[k], want)
		}
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=a,b\x00name=c\x00"))
	f.Add([]byte("=\x00=x\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for k := range parseModinfo(b) {
			if k == "" || strings.ContainsAny(k, "\x00=") {
				t.Fatalf("bad key %q from %q", k, b)
			}
		}
	})
}

func TestLoadOrder(t *testing.T) {
	deps := map[string]string{
		"virtio_pci":   "virtio_ring,virtio-pci-modern-dev,virtio",
		"virtio_blk":   "virtio,virtio_ring",
		"virtio":       "",
		"virtio_ring":  "virtio",
		"virtio_net":   "net_failover,virtio,virtio_ring",
		"net_failover": "failover",
		"failover":     "",
		"cycle_a":      "cycle_b",
		"cycle_b":      "cycle_a",
		"needs_gone":   "gone",
		"needs_inside": "inside",

		"virtio_pci_modern_dev": "",
	}
	tree := &moduleTree{
		files:   make(map[string]string),
		builtin: map[string]bool{"inside": true, "virtio_blk_builtin": true},
		read: func(path string) (module, error) {
			name := modName(path)
			m := module{Name: name, Path: path}
			for _, d := range strings.Split(deps[name], ",") {
				if d != "" {
					m.Depends = append(m.Depends, modName(d))
				}
			}
			return m, nil
		},
	}
	for name := range deps {
		tree.files[name] = "/k/" + strings.ReplaceAll(name, "_", "-") + ".ko"
	}
	names := func(ms []module) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.Name)
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		want    []string
		order   string
		errPart string
	}{
		{want: []string{"virtio_pci", "virtio_blk", "virtio_net"},
			order: "virtio virtio_ring virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net"},
		{want: []string{"virtio_blk_builtin", "needs_inside"}, order: "needs_inside"},
		{want: []string{"cycle_a"}, errPart: "cycle"},
		{want: []string{"needs_gone"}, errPart: "gone (needed by guest → needs_gone)"},
	} {
		t.Run(strings.Join(tc.want, ","), func(t *testing.T) {
			got, err := tree.loadOrder(tc.want)
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("loadOrder = %s, %v; want error containing %q", names(got), err, tc.errPart)
				}
				return
			}
			if err != nil || names(got) != tc.order {
				t.Fatalf("loadOrder = %q, %v; want %q", names(got), err, tc.order)
			}
		})
	}
}

// readCpio parses a newc archive: name → (mode, body).
func readCpio(t *testing.T, b []byte) map[string]cpioEntry {
	t.Helper()
	out := make(map[string]cpioEntry)
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	field := func(i int) int {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("cpio field %d at %d: %v", i, off, err)
		}
		return int(v)
	}
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad cpio header at %d", off)
		}
		mode, size, rmaj, rmin, nameLen := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+nameLen-1])
		off += 110 + nameLen
		align()
		body := b[off : off+size]
		off += size
		align()
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		if _, dup := out[name]; dup {
			t.Fatalf("duplicate entry %s", name)
		}
		out[name] = cpioEntry{mode: uint32(mode), body: string(body), rdev: fmt.Sprintf("%d:%d", rmaj, rmin)}
	}
}

type cpioEntry struct {
	mode uint32
	body string
	rdev string
}

func TestCpioWriter(t *testing.T) {
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	c.Dir("/dev")
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, []byte("#!/bin/sh\n"))
	c.File("empty", 0o644, nil)
	c.Symlink("bin/sh", "busybox")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := readCpio(t, buf.Bytes())
	want := map[string]cpioEntry{
		"dev":         {mode: cpioDir | 0o755, rdev: "0:0"},
		"dev/console": {mode: cpioChr | 0o600, rdev: "5:1"},
		"init":        {mode: cpioReg | 0o755, body: "#!/bin/sh\n", rdev: "0:0"},
		"empty":       {mode: cpioReg | 0o644, rdev: "0:0"},
		"bin/sh":      {mode: cpioLink | 0o777, body: "busybox", rdev: "0:0"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %v; want %d", len(got), got, len(want))
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %+v; want %+v", name, got[name], w)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

func TestCpioWriterError(t *testing.T) {
	c := &cpioWriter{w: failWriter{}}
	c.File("x", 0o644, []byte("x"))
	if err := c.Close(); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("Close = %v; want the write error", err)
	}
}

// TestPreferHugePages: huge pages only where the host has enough of them
// free, ordinary memory otherwise.
func TestPreferHugePages(t *testing.T) {
	if got := PreferHugePages(1 << 40); got != MemoryPrivate {
		t.Errorf("PreferHugePages(1 TiB) = %q: no host has that many huge pages free", got)
	}
	free := HugePagesFree()
	want := MemoryPrivate
	if free >= 2 {
		want = MemoryHugePages
	}
	if got := PreferHugePages(2); got != want {
		t.Errorf("PreferHugePages(2 MiB) with %d MiB of huge pages free = %q, want %q", free, got, want)
	}
}
