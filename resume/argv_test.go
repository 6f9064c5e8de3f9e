package resume

import (
	"cmp"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/capture"
)

func TestPlanRewritesPaths(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"/usr/bin/qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "256", "-nodefaults",
		"-kernel", kernel, "-chardev", "stdio,id=ser0,signal=off", "-serial", "chardev:ser0"}
	for _, tc := range []struct {
		name  string
		argv  []string
		net   Network
		want  []string // each must appear in the new argv, in order
		never []string // none may appear
		nics  []string
		err   string
	}{
		{
			name: "blockdev pair, NIC, QMP",
			argv: append(slices.Clone(base),
				"-qmp", "unix:/office/vm/qmp.sock,server=on,wait=off",
				"-blockdev", "driver=file,filename=/office/vm/disk.qcow2,node-name=file0",
				"-blockdev", "driver=qcow2,file=file0,node-name=disk0",
				"-device", "virtio-blk-pci,drive=disk0,id=vda,addr=0x4",
				"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,id=nic0,addr=0x5"),
			want: []string{"-machine", "pc-i440fx-7.2,accel=tcg", "-m", "512M",
				"-chardev", "file,id=ser0,path=/w/serial.log",
				"-qmp", "unix:/w/qmp.sock,server=on,wait=off",
				"-blockdev", "driver=file,filename=/w/disk-vda.qcow2,node-name=file0",
				"-blockdev", "driver=qcow2,file=file0,node-name=disk0",
				"-qmp", "unix:/w/ntc-qmp.sock,server=on,wait=off", "-pidfile", "/w/qemu.pid", "-S", "-incoming", "defer"},
			never: []string{"/office/vm/disk.qcow2", "/office/vm/qmp.sock"},
			nics:  []string{"nic0"},
		},
		{
			name: "raw -drive, JSON blockdev untouched, vmgenid",
			argv: append(slices.Clone(base), "-drive", "file=/office/d,,isk.img,format=raw,if=none,id=hd0",
				"-device", "virtio-blk-pci,drive=hd0,id=vda", "-device", "vmgenid,guid=1234", "-daemonize", "-pidfile", "/run/x.pid"),
			want:  []string{"-drive", "file=/w/disk-vda.qcow2,format=qcow2,if=none,id=hd0", "-device", "vmgenid,guid=auto", "-qmp", "unix:/w/qmp.sock,server=on,wait=off"},
			never: []string{"-daemonize", "/run/x.pid"},
		},
		{
			name: "legacy -net with the network off",
			argv: append(slices.Clone(base), "-drive", "file=/office/disk.img,id=hd0", "-device", "virtio-blk-pci,drive=hd0,id=vda", "-net", "nic"),
			net:  NetworkOff,
			err:  "--network on",
		},
		{
			name: "missing kernel",
			argv: append([]string{base[0], "-kernel", "/nonexistent/vmlinuz"}, "-drive", "file=/office/disk.img,id=hd0", "-device", "virtio-blk-pci,drive=hd0,id=vda"),
			err:  "put the same file at that path",
		},
		{
			name: "disk not on the command line",
			argv: slices.Clone(base),
			err:  "no -blockdev node or -drive",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := "disk0"
			if strings.Contains(strings.Join(tc.argv, " "), "id=hd0") {
				node = "hd0"
			}
			m := &capture.Manifest{Machine: capture.Machine{Argv: tc.argv, Type: "pc-i440fx-7.2", RAMBytes: 512 << 20},
				Disks: []capture.Disk{{Name: "disk-vda", Node: node, Device: "vda", Index: "disk-vda.idx", Size: 64 << 20}}}
			p, err := plan(m, "/store/sets/vm/images", "/w", cmp.Or(tc.net, NetworkOff), "qemu")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("plan: %v, want an error saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(p.Argv, " ")
			if want := strings.Join(tc.want, " "); !inOrder(p.Argv, tc.want) {
				t.Errorf("argv\n %s\nlacks, in order,\n %s", got, want)
			}
			for _, s := range tc.never {
				if strings.Contains(got, s) {
					t.Errorf("argv still holds %q: %s", s, got)
				}
			}
			if tc.nics != nil && !slices.Equal(p.NICs, tc.nics) {
				t.Errorf("NICs %v, want %v", p.NICs, tc.nics)
			}
			if len(p.Disks) != 1 || p.Disks[0].Image != "/store/sets/vm/images/disk-vda" || p.Disks[0].Overlay != "/w/disk-vda.qcow2" {
				t.Errorf("disks %+v", p.Disks)
			}
		})
	}
}

// inOrder reports whether want appears in argv as a subsequence.
func inOrder(argv, want []string) bool {
	i := 0
	for _, a := range argv {
		if i < len(want) && a == want[i] {
			i++
		}
	}
	return i == len(want)
}
