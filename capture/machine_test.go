package capture

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testArgv is the test guest's command line (internal/testguest) with a
// NIC and RAM on a shared memfd.
func testArgv(t testing.TB) []string {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	os.WriteFile(kernel, []byte("kernel"), 0o600)
	os.WriteFile(initrd, []byte("initrd"), 0o600)
	return []string{"/usr/bin/qemu-system-x86_64",
		"-machine", "pc,accel=tcg,memory-backend=pc.ram", "-cpu", "qemu64,+x2apic,-svm,pmu=off", "-smp", "2,sockets=1,cores=2",
		"-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=1",
		"-chardev", "stdio,id=ser0,signal=off", "-serial", "chardev:ser0",
		"-qmp", "unix:" + dir + "/qmp.sock,server=on,wait=off",
		"-blockdev", "driver=file,filename=" + dir + "/disk.qcow2,node-name=file0",
		"-blockdev", "driver=qcow2,file=file0,node-name=disk0",
		"-device", "virtio-blk-pci,drive=disk0,id=vda,addr=0x4",
		"-object", "memory-backend-memfd,id=pc.ram,size=256M,share=on,prealloc=on,x-use-canonical-path-for-ramblock-id=off",
		"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,id=nic0,addr=0x5,mac=52:54:00:12:34:56",
		"-device", `{"driver":"vmgenid","id":"gen0","guid":"1234"}`,
	}
}

func TestDescribeArgv(t *testing.T) {
	m, err := describeArgv(testArgv(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Machine{
		Arch: "x86_64", Type: "pc", Accel: "tcg",
		CPU: CPU{Model: "qemu64", Features: []Prop{{"x2apic", "on"}, {"svm", "off"}, {"pmu", "off"}}, Count: 2, Sockets: 1, Cores: 2},
		RAM: MachineRAM{Backend: RAMShared, BackendID: "pc.ram", IDIsBlockName: true},
		Devices: []Device{
			{Driver: "virtio-blk-pci", ID: "vda", Addr: "0x4", Props: map[string]string{"drive": "disk0"}},
			{Driver: "virtio-net-pci", ID: "nic0", Addr: "0x5", Props: map[string]string{"netdev": "n0", "mac": "52:54:00:12:34:56"}},
			{Driver: "vmgenid", ID: "gen0", Props: map[string]string{"guid": "1234"}},
		},
		NICs:     []NIC{{ID: "nic0", Netdev: "n0", MAC: "52:54:00:12:34:56"}},
		Serials:  []Serial{{Chardev: "ser0"}},
		Chardevs: []string{"ser0"},
		Kernel: &Kernel{Append: "console=ttyS0 panic=1",
			Kernel: FileRef{Name: "vmlinuz", Size: 6, SHA256: "a0d2d5e3fd8ea4d5d9f4fa4a45d2bd3ab5ba9a89c5bdf2fa93e7a2bb4f0ba4d5"},
			Initrd: &FileRef{Name: "initrd", Size: 6}},
		Flags: []string{"nodefaults", "no-reboot"},
	}
	// Digests are whatever sha256 says; compare the rest.
	want.Kernel.Kernel.SHA256, want.Kernel.Initrd.SHA256 = m.Kernel.Kernel.SHA256, m.Kernel.Initrd.SHA256
	if !reflect.DeepEqual(m, want) {
		t.Errorf("description\n %+v\nwant\n %+v", m, want)
	}
	if m.driveOf("vda") != "disk0" {
		t.Errorf("driveOf(vda) = %q", m.driveOf("vda"))
	}
}

// What ntc cannot describe is recorded by name, so that a receiver
// refuses it; what concerns only the source host is left out.
func TestDescribeArgvUnsupported(t *testing.T) {
	argv := append(testArgv(t), "-plugin", "file=/tmp/evil.so", "-monitor", "tcp:127.0.0.1:4444,server=on,wait=off",
		"-object", "secret,id=s0,file=/etc/shadow", "-fw_cfg", "name=opt/x,file=/etc/passwd", "-parallel", "none",
		"-net", "nic", "-m", "256,slots=2,maxmem=1G", "-object", "memory-backend-file,id=m1,mem-path=/x,size=1G")
	m, err := describeArgv(argv)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"-object secret", "-fw_cfg", "-parallel", "-net (legacy hub networking: give the source -nic or -netdev with -device)",
		"-m slots (memory hotplug)", "-object memory-backend m1 (memory besides the machine's RAM)"} {
		if !slices.Contains(m.Unsupported, u) {
			t.Errorf("unsupported %q, want %q among them", m.Unsupported, u)
		}
	}
	if b, _ := EncodeManifest(&Manifest{Machine: m}); bytes.Contains(b, []byte("evil")) || bytes.Contains(b, []byte("4444")) || bytes.Contains(b, []byte("shadow")) {
		t.Errorf("the description keeps a host path or listener: %s", b)
	}
}

func validManifest() *Manifest {
	return &Manifest{
		Version: ManifestVersion, Seq: 2, Parent: 1,
		Machine: Machine{Arch: "x86_64", Type: "pc-i440fx-7.2", CPU: CPU{Count: 1}, RAM: MachineRAM{Size: 256 << 20, Backend: RAMPlain},
			Devices: []Device{{Driver: "virtio-blk-pci", ID: "vda", Props: map[string]string{"drive": "disk0"}}}},
		Disks:       []Disk{{Name: "disk-vda", Node: "disk0", Device: "vda", Size: 64 << 20, Index: "disk-vda.idx", Mode: "full"}},
		RAM:         []RAM{{Name: "pc.ram", Index: "ram-pc.ram.idx", Size: 256 << 20}, {Name: "/rom@etc/acpi/tables", Index: "ram-_rom_etc_acpi_tables.idx", Size: 128 << 10}},
		DeviceState: ImageRef{Index: "device.idx", Size: 40000},
		Stream:      StreamInfo{Format: StreamFormat, Index: "stream.idx", Size: 9000, Machine: "pc-i440fx-7.2", PageSize: 4096},
	}
}

func TestDecodeManifestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(m *Manifest)
		raw    string
		want   error
		says   string
	}{
		{name: "disk name", tamper: func(m *Manifest) { m.Disks[0].Name = "../x" }, want: ErrBadManifest, says: `"../x"`},
		{name: "index escape", tamper: func(m *Manifest) { m.Disks[0].Index = "../../etc/hostname.idx" }, want: ErrBadManifest, says: "hostname"},
		{name: "absolute index", tamper: func(m *Manifest) { m.Stream.Index = "/dev/zero" }, want: ErrBadManifest, says: "/dev/zero"},
		{name: "not an index", tamper: func(m *Manifest) { m.RAM[0].Index = "manifest.json" }, want: ErrBadManifest, says: ".idx"},
		{name: "twice", tamper: func(m *Manifest) { m.RAM[1].Index = "ram-pc.ram.idx" }, want: ErrBadManifest, says: "twice"},
		{name: "device state size", tamper: func(m *Manifest) { m.DeviceState.Size = 1 << 40 }, want: ErrBadManifest, says: "device state"},
		{name: "stream size", tamper: func(m *Manifest) { m.Stream.Size = 1 << 30 }, want: ErrBadManifest, says: "stream description"},
		{name: "changes", tamper: func(m *Manifest) { m.Disks[0].Changes = "../../x" }, want: ErrBadManifest, says: "changes"},
		{name: "version 1", raw: `{"version":1,"machine":{"argv":["/bin/sh","-c","id"]}}`, want: ErrOldManifest, says: "no longer replays"},
		{name: "version 9", raw: `{"version":9}`, want: ErrBadManifest, says: "version 9"},
		{name: "huge", raw: `{"version":2,"x":"` + strings.Repeat("a", MaxManifestBytes) + `"}`, want: ErrBadManifest, says: "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.raw)
			if tc.tamper != nil {
				m := validManifest()
				tc.tamper(m)
				b, _ = EncodeManifest(m)
			}
			_, err := DecodeManifest(b)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("DecodeManifest: %v; want %v saying %q", err, tc.want, tc.says)
			}
		})
	}
}

// A manifest file over the bound, a symlink out of the directory and a
// device node are refused before anything is read.
func TestReadManifestFileBounds(t *testing.T) {
	dir := t.TempDir()
	b, _ := EncodeManifest(validManifest())
	os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o600)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if m, err := ReadManifestFile(root, "manifest.json"); err != nil || !reflect.DeepEqual(m, validManifest()) {
		t.Fatalf("valid manifest: %+v, %v", m, err)
	}
	huge := filepath.Join(dir, "huge.json")
	f, _ := os.Create(huge)
	f.Truncate(64 << 30) // sparse: 64 GiB that take no room
	f.Close()
	os.Symlink("/dev/zero", filepath.Join(dir, "zero"))
	os.Symlink("/etc/hostname", filepath.Join(dir, "host"))
	for name, says := range map[string]string{"huge.json": "more than", "zero": "escapes", "host": "escapes", "../x": "name"} {
		if _, err := ReadManifestFile(root, name); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%s: %v, want an error saying %q", name, err, says)
		}
	}
	if _, err := ReadFileBounded(root, "manifest.json", int64(len(b))+1, 1<<20); err == nil || !strings.Contains(err.Error(), "manifest says") {
		t.Errorf("size other than declared: %v", err)
	}
}

// FuzzDecodeManifest: whatever DecodeManifest accepts encodes and decodes
// to the same manifest, and passes Check.
func FuzzDecodeManifest(f *testing.F) {
	b, _ := EncodeManifest(validManifest())
	f.Add(b)
	m, _ := describeArgv(testArgv(f))
	full := validManifest()
	full.Machine = m
	b, _ = EncodeManifest(full)
	f.Add(b)
	f.Add([]byte(`{"version":1,"machine":{"argv":["/bin/sh"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			return
		}
		if err := m.Check(); err != nil {
			t.Fatalf("accepted a manifest Check refuses: %v", err)
		}
		enc, err := EncodeManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeManifest(enc)
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Fatalf("decode(encode(m)) = %+v, %v; want %+v", back, err, m)
		}
	})
}
