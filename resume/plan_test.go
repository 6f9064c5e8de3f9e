package resume

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/capture"
	qemuopt "github.com/ntc-project/ntc/qemu/opt"
)

// guestManifest is the test guest's checkpoint as capture describes it
// (internal/testguest: -kernel, a blockdev disk, a NIC, RAM on a memfd).
func guestManifest() *capture.Manifest {
	return &capture.Manifest{
		Version: capture.ManifestVersion, Seq: 2,
		Machine: capture.Machine{
			Arch: "x86_64", Type: "pc-i440fx-7.2", Accel: "tcg",
			CPU: capture.CPU{Model: "qemu64", Count: 1},
			RAM: capture.MachineRAM{Size: 256 << 20, Backend: capture.RAMHugePages, BackendID: "pc.ram", IDIsBlockName: true},
			Devices: []capture.Device{
				{Driver: "virtio-blk-pci", ID: "vda", Addr: "0x4", Props: map[string]string{"drive": "disk0"}},
				{Driver: "virtio-net-pci", ID: "nic0", Addr: "0x5", Props: map[string]string{"netdev": "n0"}},
				{Driver: "vmgenid", ID: "gen0", Props: map[string]string{"guid": "1234"}},
			},
			NICs:     []capture.NIC{{ID: "nic0", Netdev: "n0"}},
			Serials:  []capture.Serial{{Chardev: "ser0"}},
			Chardevs: []string{"ser0"},
			Kernel:   &capture.Kernel{Append: "console=ttyS0 panic=1", Kernel: capture.FileRef{Name: "vmlinuz"}, Initrd: &capture.FileRef{Name: "initrd"}},
			Flags:    []string{"nodefaults", "no-reboot"},
		},
		Disks:       []capture.Disk{{Name: "disk-vda", Node: "disk0", Device: "vda", Index: "disk-vda.idx", Size: 64 << 20}},
		RAM:         []capture.RAM{{Name: "pc.ram", Index: "ram-pc.ram.idx", Size: 256 << 20}},
		DeviceState: capture.ImageRef{Index: "device.idx", Size: 1000},
		Stream:      capture.StreamInfo{Format: capture.StreamFormat, Index: "stream.idx", Size: 1000},
	}
}

var testHost = host{images: "/store/sets/vm/images", work: "/w", network: NetworkOff, qemu: "/usr/bin/qemu-system-x86_64",
	kernel: "/boot/vmlinuz", initrd: "/boot/initrd", sandbox: true}

func TestPlanBuildsTheCommandLine(t *testing.T) {
	p, err := plan(guestManifest(), testHost)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/qemu-system-x86_64",
		"-machine", "pc-i440fx-7.2,memory-backend=pc.ram", "-accel", "tcg,split-wx=on", "-cpu", "qemu64", "-smp", "1", "-m", "256M",
		"-object", "memory-backend-memfd,id=pc.ram,size=268435456,share=on,x-use-canonical-path-for-ramblock-id=off",
		"-nodefaults", "-no-reboot", "-display", "none", "-sandbox", sandboxOpts,
		"-kernel", "/boot/vmlinuz", "-initrd", "/boot/initrd", "-append", "console=ttyS0 panic=1",
		"-add-fd", "fd=3,set=1,opaque=disk-vda",
		"-blockdev", "driver=raw,node-name=ntc-base0,read-only=on,file.driver=file,file.filename=/dev/fdset/1",
		"-blockdev", "node-name=disk0,driver=qcow2,backing=ntc-base0,file.driver=file,file.filename=/w/disk-vda.qcow2",
		"-netdev", "user,id=n0,restrict=on",
		"-chardev", "file,id=ser0,path=/w/serial.log", "-serial", "chardev:ser0",
		"-device", "virtio-blk-pci,id=vda,addr=0x4,drive=disk0",
		"-device", "virtio-net-pci,id=nic0,addr=0x5,netdev=n0",
		"-device", "vmgenid,id=gen0,guid=auto",
		"-qmp", "unix:/w/qmp.sock,server=on,wait=off", "-qmp", "unix:/w/ntc-qmp.sock,server=on,wait=off",
		"-pidfile", "/w/qemu.pid", "-S", "-incoming", "defer"}
	if !slices.Equal(p.Argv, want) {
		t.Errorf("argv\n %q\nwant\n %q", p.Argv, want)
	}
	if !slices.Equal(p.NICs, []string{"nic0"}) || !p.GenID || p.SerialLog != "/w/serial.log" ||
		len(p.Disks) != 1 || p.Disks[0].Image != "/store/sets/vm/images/disk-vda" || p.Disks[0].Overlay != "/w/disk-vda.qcow2" {
		t.Errorf("plan %+v", p)
	}

	// The receiver's choices: huge pages when it has them, the network on.
	h := testHost
	h.hugePages, h.network, h.sandbox = true, NetworkOn, false
	p, err = plan(guestManifest(), h)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(p.Argv, " ")
	for _, s := range []string{"hugetlb=on,hugetlbsize=2M,prealloc=on", "-netdev user,id=n0 "} {
		if !strings.Contains(got, s) {
			t.Errorf("argv lacks %q: %s", s, got)
		}
	}
	if strings.Contains(got, "-sandbox") || strings.Contains(got, "restrict") {
		t.Errorf("argv: %s", got)
	}
}

func TestPlanNeedsTheReceiversKernel(t *testing.T) {
	h := testHost
	h.kernel, h.initrd = "", ""
	if _, err := plan(guestManifest(), h); !errors.Is(err, ErrNeedKernel) || !errors.Is(err, ErrNeedInitrd) || !strings.Contains(err.Error(), "vmlinuz") {
		t.Errorf("no kernel, no initrd: %v", err)
	}
	h.kernel = "/boot/vmlinuz"
	if _, err := plan(guestManifest(), h); !errors.Is(err, ErrNeedInitrd) || errors.Is(err, ErrNeedKernel) || !strings.Contains(err.Error(), "initrd") {
		t.Errorf("no initrd: %v", err)
	}
	h.kernel, h.initrd = "", "/boot/initrd"
	if _, err := plan(guestManifest(), h); !errors.Is(err, ErrNeedKernel) || errors.Is(err, ErrNeedInitrd) {
		t.Errorf("no kernel: %v", err)
	}
	m := guestManifest()
	m.Machine.Firmware = &capture.FileRef{Name: "bios-256k.bin"}
	if _, err := plan(m, testHost); !errors.Is(err, ErrNeedFirmware) || !strings.Contains(err.Error(), "bios-256k.bin") {
		t.Errorf("no firmware: %v", err)
	}
}

// hostileDescriptions are machine descriptions an attacker may push, each
// with the item the refusal must name. They stand for the command line
// payloads of issue 10 (a program as argv[0], -plugin, -monitor tcp,
// memory-backend-file mem-path, a chardev file path, guestfwd, a tap
// script, -drive file=/dev/sda, -fw_cfg file, -object secret file, -vnc,
// -gdb) now that a checkpoint carries data, not a command line.
var hostileDescriptions = []struct {
	name, says string
	tamper     func(m *capture.Manifest)
}{
	{"program as arch", `"x86_64/../../../bin/sh"`, func(m *capture.Manifest) { m.Machine.Arch = "x86_64/../../../bin/sh" }},
	{"plugin", `"-plugin"`, func(m *capture.Manifest) { m.Machine.Unsupported = []string{"-plugin"} }},
	{"monitor tcp", `"-monitor"`, func(m *capture.Manifest) { m.Machine.Unsupported = []string{"-monitor"} }},
	{"vnc and gdb as flags", `option -vnc`, func(m *capture.Manifest) { m.Machine.Flags = append(m.Machine.Flags, "vnc") }},
	{"gdb as flag", `option -gdb`, func(m *capture.Manifest) { m.Machine.Flags = []string{"gdb"} }},
	{"memory backend file", `"memory-backend-file"`, func(m *capture.Manifest) {
		m.Machine.Objects = []capture.Object{{Type: "memory-backend-file", ID: "m1", Props: map[string]string{"mem-path": "/etc"}}}
	}},
	{"secret file", `"secret"`, func(m *capture.Manifest) {
		m.Machine.Objects = []capture.Object{{Type: "secret", ID: "s0", Props: map[string]string{"file": "/etc/shadow"}}}
	}},
	{"object property path", `property "filename"`, func(m *capture.Manifest) {
		m.Machine.Objects = []capture.Object{{Type: "iothread", ID: "io0", Props: map[string]string{"filename": "/etc/shadow"}}}
	}},
	{"chardev id with a path", `chardev id "ser0,path=/etc/passwd"`, func(m *capture.Manifest) {
		m.Machine.Chardevs = []string{"ser0,path=/etc/passwd"}
		m.Machine.Serials = []capture.Serial{{Chardev: "ser0,path=/etc/passwd"}}
	}},
	{"netdev guestfwd", `netdev id "n0,guestfwd=tcp:10.0.2.1:1-cmd:touch /tmp/x"`, func(m *capture.Manifest) {
		m.Machine.NICs[0].Netdev = "n0,guestfwd=tcp:10.0.2.1:1-cmd:touch /tmp/x"
		m.Machine.Devices[1].Props["netdev"] = m.Machine.NICs[0].Netdev
	}},
	{"tap script as NIC model", `-nic model "tap,script=/tmp/x"`, func(m *capture.Manifest) {
		m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, Model: "tap,script=/tmp/x"})
	}},
	{"drive file", `property "file"`, func(m *capture.Manifest) { m.Machine.Devices[0].Props["file"] = "/dev/sda" }},
	{"drive not carried", `drive "hostdisk"`, func(m *capture.Manifest) { m.Machine.Devices[0].Props["drive"] = "hostdisk" }},
	{"disk node with options", `disk node id "disk0,file.filename=/dev/sda"`, func(m *capture.Manifest) {
		m.Disks[0].Node = "disk0,file.filename=/dev/sda"
		m.Machine.Devices[0].Props["drive"] = m.Disks[0].Node
	}},
	{"fw_cfg", `"-fw_cfg"`, func(m *capture.Manifest) { m.Machine.Unsupported = []string{"-fw_cfg"} }},
	{"loader device", `driver "loader"`, func(m *capture.Manifest) {
		m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "loader", Props: map[string]string{"file": "/etc/shadow"}})
	}},
	{"romfile", `property romfile`, func(m *capture.Manifest) { m.Machine.Devices[1].Props["romfile"] = "/tmp/evil.rom" }},
	{"memory backend id with options", `memory backend id "pc.ram,mem-path=/etc"`, func(m *capture.Manifest) {
		m.Machine.RAM.BackendID = "pc.ram,mem-path=/etc"
	}},
	{"machine property", `property "dumpdtb"`, func(m *capture.Manifest) { m.Machine.Props = map[string]string{"dumpdtb": "/tmp/x"} }},
	{"cpu model with options", `CPU model`, func(m *capture.Manifest) { m.Machine.CPU.Model = "qemu64,-monitor" }},
	{"bus elsewhere", `bus "evil.0"`, func(m *capture.Manifest) { m.Machine.Devices[0].Bus = "evil.0" }},
	{"kernel name", `kernel file "../../etc/shadow"`, func(m *capture.Manifest) { m.Machine.Kernel.Kernel.Name = "../../etc/shadow" }},
	{"append control bytes", `kernel command line`, func(m *capture.Manifest) { m.Machine.Kernel.Append = "x\n-monitor stdio" }},
	{"boot splash", `property "splash"`, func(m *capture.Manifest) { m.Machine.Boot = map[string]string{"splash": "/etc/shadow"} }},
	{"rtc base path", `-rtc base`, func(m *capture.Manifest) { m.Machine.RTC = map[string]string{"base": "/etc/localtime"} }},
	{"vga", `-vga`, func(m *capture.Manifest) { m.Machine.VGA = "std -vnc :0" }},
	{"global", `driver "loader"`, func(m *capture.Manifest) {
		m.Machine.Globals = []capture.Global{{Driver: "loader", Property: "file", Value: "/etc/shadow"}}
	}},
	{"reserved id", `device id "ntc-base0"`, func(m *capture.Manifest) { m.Machine.Devices[2].ID = "ntc-base0" }},
	{"MAC", `MAC`, func(m *capture.Manifest) { m.Machine.NICs[0].MAC = "52:54:00:12:34:56,romfile=/x" }},
	{"PCI addr", `addr`, func(m *capture.Manifest) { m.Machine.Devices[0].Addr = "0x4,romfile=/x" }},
}

func TestValidateRefusesHostileDescriptions(t *testing.T) {
	for _, tc := range hostileDescriptions {
		t.Run(tc.name, func(t *testing.T) {
			m := guestManifest()
			tc.tamper(m)
			_, err := plan(m, testHost)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("plan: %v; want a refusal naming %s", err, tc.says)
			}
		})
	}
}

// confined checks that every path in argv is the receiver's: under its
// work directory, its images (by descriptor: /dev/fdset), or one of its
// own files; only ntc's own options appear.
func confined(t *testing.T, argv []string, h host) {
	t.Helper()
	ok := func(v string) bool {
		v = strings.TrimPrefix(v, "unix:")
		return !strings.Contains(v, "/") || strings.HasPrefix(v, h.work+"/") || strings.HasPrefix(v, "/dev/fdset/") ||
			v == h.kernel || v == h.initrd || v == h.firmware
	}
	options := []string{"-machine", "-accel", "-cpu", "-smp", "-m", "-object", "-nodefaults", "-no-reboot", "-no-shutdown", "-no-hpet", "-no-acpi",
		"-display", "-sandbox", "-kernel", "-initrd", "-append", "-bios", "-add-fd", "-blockdev", "-drive", "-netdev", "-nic", "-net",
		"-chardev", "-serial", "-device", "-global", "-vga", "-rtc", "-boot", "-uuid", "-qmp", "-pidfile", "-S", "-incoming"}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if !slices.Contains(options, a) {
			t.Fatalf("argv[%d] = %q is not one of ntc's options: %q", i, a, argv)
		}
		if a == "-append" {
			i++
			continue
		}
		if i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
			i++
			o, err := qemuopt.Parse(argv[i], "x")
			if err != nil {
				t.Fatalf("argv[%d] = %q does not parse: %v", i, argv[i], err)
			}
			for _, p := range o {
				if !ok(p.Key) || !ok(p.Value) {
					t.Fatalf("argv[%d] = %q names a path that is not the receiver's: %q", i, argv[i], p)
				}
			}
		}
	}
}

// FuzzPlan: whatever manifest decodes and passes the allowlist gives a
// command line of ntc's options only, naming no path but the receiver's.
func FuzzPlan(f *testing.F) {
	for _, m := range []*capture.Manifest{guestManifest()} {
		b, _ := capture.EncodeManifest(m)
		f.Add(b)
	}
	m := guestManifest()
	m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "ide", Props: map[string]string{"media": "cdrom"}}}
	m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, Model: "e1000", MAC: "52:54:00:00:00:01"})
	m.Machine.Objects = []capture.Object{{Type: "iothread", ID: "io0"}}
	m.Machine.Devices[0].Props["iothread"] = "io0"
	b, _ := capture.EncodeManifest(m)
	f.Add(b)
	for _, tc := range hostileDescriptions {
		m := guestManifest()
		tc.tamper(m)
		b, _ := capture.EncodeManifest(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := capture.DecodeManifest(b)
		if err != nil {
			return
		}
		p, err := plan(m, testHost)
		if err != nil {
			return
		}
		confined(t, p.Argv, testHost)
	})
}

func TestPlanConfined(t *testing.T) {
	p, err := plan(guestManifest(), testHost)
	if err != nil {
		t.Fatal(err)
	}
	confined(t, p.Argv, testHost)
}

// TestPlanChardevFiles: the first serial port (a -serial with a chardev,
// else an isa-serial device, as libvirt attaches it) writes to serial.log;
// every other character device's file is named after its chardev's id.
func TestPlanChardevFiles(t *testing.T) {
	isaSerial := func(id, chardev string) capture.Device {
		return capture.Device{Driver: "isa-serial", ID: id, Props: map[string]string{"chardev": chardev}}
	}
	for _, tc := range []struct {
		name      string
		change    func(mc *capture.Machine)
		serialLog string
		consoles  []string
		has       [][2]string
	}{
		{"one -serial port: the console", func(mc *capture.Machine) {},
			"/w/serial.log", nil,
			[][2]string{{"-chardev", "file,id=ser0,path=/w/serial.log"}, {"-serial", "chardev:ser0"}}},
		{"a second -serial port: named after its chardev", func(mc *capture.Machine) {
			mc.Chardevs = append(mc.Chardevs, "ser1")
			mc.Serials = append(mc.Serials, capture.Serial{Chardev: "ser1"})
		}, "/w/serial.log", []string{"/w/chardev-ser1.log"},
			[][2]string{{"-chardev", "file,id=ser1,path=/w/chardev-ser1.log"}, {"-serial", "chardev:ser1"}}},
		{"an isa-serial device without -serial (libvirt's serial port): the console", func(mc *capture.Machine) {
			mc.Serials, mc.Chardevs = nil, []string{"charserial0"}
			mc.Devices = append(mc.Devices, isaSerial("serial0", "charserial0"))
		}, "/w/serial.log", nil,
			[][2]string{{"-chardev", "file,id=charserial0,path=/w/serial.log"}, {"-device", "isa-serial,id=serial0,chardev=charserial0"}}},
		{"an isa-serial device after a -serial port: named after its chardev", func(mc *capture.Machine) {
			mc.Chardevs = append(mc.Chardevs, "charserial1")
			mc.Devices = append(mc.Devices, isaSerial("serial1", "charserial1"))
		}, "/w/serial.log", []string{"/w/chardev-charserial1.log"},
			[][2]string{{"-chardev", "file,id=ser0,path=/w/serial.log"}, {"-chardev", "file,id=charserial1,path=/w/chardev-charserial1.log"}}},
		{"two isa-serial devices: the first is the console", func(mc *capture.Machine) {
			mc.Serials, mc.Chardevs = nil, []string{"charserial0", "charserial1"}
			mc.Devices = append(mc.Devices, isaSerial("serial0", "charserial0"), isaSerial("serial1", "charserial1"))
		}, "/w/serial.log", []string{"/w/chardev-charserial1.log"},
			[][2]string{{"-chardev", "file,id=charserial0,path=/w/serial.log"}, {"-chardev", "file,id=charserial1,path=/w/chardev-charserial1.log"}}},
		{"-serial none first: the next port is the console", func(mc *capture.Machine) {
			mc.Serials = []capture.Serial{{None: true}, {Chardev: "ser0"}}
		}, "/w/serial.log", nil,
			[][2]string{{"-serial", "none"}, {"-chardev", "file,id=ser0,path=/w/serial.log"}}},
		{"a -serial without a chardev after the console: ntc's chardev, named after its id", func(mc *capture.Machine) {
			mc.Serials = append(mc.Serials, capture.Serial{})
		}, "/w/serial.log", []string{"/w/chardev-ntc-serial1.log"},
			[][2]string{{"-chardev", "file,id=ntc-serial1,path=/w/chardev-ntc-serial1.log"}, {"-serial", "chardev:ntc-serial1"}}},
		{"QEMU's default serial port: the console", func(mc *capture.Machine) {
			mc.Serials, mc.Chardevs, mc.Flags = nil, nil, nil
		}, "/w/serial.log", nil,
			[][2]string{{"-chardev", "file,id=ntc-serial0,path=/w/serial.log"}, {"-serial", "chardev:ntc-serial0"}}},
		{"a virtio serial port: a socket named after its chardev", func(mc *capture.Machine) {
			mc.Chardevs = append(mc.Chardevs, "agent")
			mc.Devices = append(mc.Devices, capture.Device{Driver: "virtio-serial-pci", ID: "vser0"},
				capture.Device{Driver: "virtserialport", Bus: "vser0.0", Props: map[string]string{"chardev": "agent", "name": "org.qemu.guest_agent.0"}})
		}, "/w/serial.log", []string{"/w/chardev-agent.sock"},
			[][2]string{{"-chardev", "socket,id=agent,path=/w/chardev-agent.sock,server=on,wait=off"}}},
		{"no serial port: no console", func(mc *capture.Machine) {
			mc.Serials, mc.Chardevs = nil, nil
		}, "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := guestManifest()
			tc.change(&m.Machine)
			p, err := plan(m, testHost)
			if err != nil {
				t.Fatal(err)
			}
			if p.SerialLog != tc.serialLog || !slices.Equal(p.Consoles, tc.consoles) {
				t.Errorf("serial log %q, consoles %q; want %q, %q", p.SerialLog, p.Consoles, tc.serialLog, tc.consoles)
			}
			for _, want := range tc.has {
				if !hasArg(p.Argv, want[0], want[1]) {
					t.Errorf("argv lacks %s %q:\n%q", want[0], want[1], p.Argv)
				}
			}
			if tc.serialLog == "" && strings.Contains(strings.Join(p.Argv, " "), serialName) {
				t.Errorf("argv names %s without a serial port: %q", serialName, p.Argv)
			}
			confined(t, p.Argv, testHost)
		})
	}
}

// TestChardevFileStaysInTheWorkDirectory: a chardev's file is named only
// after a QEMU id, and a socket's path must fit a unix socket address.
func TestChardevFileStaysInTheWorkDirectory(t *testing.T) {
	p, err := newPlan(testHost)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"../x", "a/b", "", ".hidden", "a,path=/etc/passwd"} {
		if f, err := p.chardevFile(id, ".log"); !errors.Is(err, ErrRefused) {
			t.Errorf("chardev %q: file %q, %v; want a refusal", id, f, err)
		}
	}
	h := testHost
	h.work = "/" + strings.Repeat("w", 80)
	if p, err = newPlan(h); err != nil {
		t.Fatal(err)
	}
	if _, err := p.chardevFile("agent", ".log"); err != nil {
		t.Errorf("a log file is not bound by the socket length: %v", err)
	}
	if f, err := p.chardevFile(strings.Repeat("a", 30), ".sock"); !errors.Is(err, ErrWorkDirTooLong) {
		t.Errorf("socket %s (%d bytes): %v, want ErrWorkDirTooLong", f, len(f), err)
	}
	h.work = "/" + strings.Repeat("w", 100)
	if _, err := newPlan(h); !errors.Is(err, ErrWorkDirTooLong) {
		t.Errorf("QMP socket in %s: %v, want ErrWorkDirTooLong", h.work, err)
	}
}
