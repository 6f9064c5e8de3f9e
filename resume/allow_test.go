package resume

import (
	"errors"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/capture"
)

// allowRules has one case per rule of validate (allow.go): a description
// the rule lets through and one it refuses, with what the refusal must
// name. Both sides start from guestManifest, which passes.
var allowRules = []struct {
	rule     string
	ok, bad  func(m *capture.Manifest)
	badSays  string
	okIsZero bool // ok leaves the manifest as it is
}{
	{rule: "unsupported options", okIsZero: true,
		bad: func(m *capture.Manifest) { m.Machine.Unsupported = []string{"-fw_cfg"} }, badSays: `"-fw_cfg"`},
	{rule: "arch allowlist",
		ok:  func(m *capture.Manifest) { m.Machine.Arch = "aarch64" },
		bad: func(m *capture.Manifest) { m.Machine.Arch = "x86_64;sh" }, badSays: `machine arch "x86_64;sh"`},
	{rule: "machine type is a token",
		ok:  func(m *capture.Manifest) { m.Machine.Type = "pc-q35-7.2" },
		bad: func(m *capture.Manifest) { m.Machine.Type = "pc,dumpdtb=/x" }, badSays: `machine type "pc,dumpdtb=/x"`},
	{rule: "accelerator allowlist",
		ok:  func(m *capture.Manifest) { m.Machine.Accel = "kvm" },
		bad: func(m *capture.Manifest) { m.Machine.Accel = "xen" }, badSays: `accelerator "xen"`},
	{rule: "ids: syntax",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[2].ID = "gen-0.a_b" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[2].ID = "0gen" }, badSays: `device id "0gen"`},
	{rule: "ids: ntc's own prefix is reserved",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[2].ID = "gen-ntc" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[2].ID = "NTCgen" }, badSays: `device id "NTCgen"`},
	{rule: "ids: one id, one kind",
		ok: func(m *capture.Manifest) {
			m.Machine.Drives = []capture.Drive{{ID: "disk0", If: "virtio"}} // a drive may be a disk node
		},
		bad:     func(m *capture.Manifest) { m.Machine.Chardevs = append(m.Machine.Chardevs, "vda") },
		badSays: `device id "vda" is also a chardev`},
	{rule: "disk device name is a token",
		ok:  func(m *capture.Manifest) { m.Disks[0].Device = "vda-1" },
		bad: func(m *capture.Manifest) { m.Disks[0].Device = "vda x" }, badSays: `device name "vda x"`},
	{rule: "drive interface allowlist",
		ok:  func(m *capture.Manifest) { m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "ide"}} },
		bad: func(m *capture.Manifest) { m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "pflash"}} }, badSays: `interface "pflash"`},
	{rule: "drive property allowlist",
		ok: func(m *capture.Manifest) {
			m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "ide", Props: map[string]string{"index": "2", "bus": "1", "unit": "0"}}}
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "ide", Props: map[string]string{"file": "/dev/sda"}}}
		}, badSays: `drive cd0: property "file"`},
	{rule: "drive media",
		ok: func(m *capture.Manifest) {
			m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "ide", Props: map[string]string{"media": "cdrom"}}}
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "ide", Props: map[string]string{"media": "tape"}}}
		}, badSays: `media "tape"`},
	{rule: "object type allowlist",
		ok:  func(m *capture.Manifest) { m.Machine.Objects = []capture.Object{{Type: "rng-builtin", ID: "rng0"}} },
		bad: func(m *capture.Manifest) { m.Machine.Objects = []capture.Object{{Type: "filter-dump", ID: "f0"}} }, badSays: `-object "filter-dump"`},
	{rule: "object property allowlist",
		ok: func(m *capture.Manifest) {
			m.Machine.Objects = []capture.Object{{Type: "iothread", ID: "io0", Props: map[string]string{"poll-max-ns": "0x8000"}}}
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Objects = []capture.Object{{Type: "iothread", ID: "io0", Props: map[string]string{"poll-max-ns": "32k"}}}
		}, badSays: `object io0: property poll-max-ns`},
	{rule: "NIC MAC syntax",
		ok:  func(m *capture.Manifest) { m.Machine.NICs[0].MAC = "52:54:00:AB:cd:01" },
		bad: func(m *capture.Manifest) { m.Machine.NICs[0].MAC = "52:54:00:ab:cd" }, badSays: `MAC "52:54:00:ab:cd"`},
	{rule: "-nic model allowlist",
		ok: func(m *capture.Manifest) {
			m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, ID: "nic1", Model: "e1000"})
		},
		bad: func(m *capture.Manifest) {
			m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, ID: "nic1", Model: "tap"})
		},
		badSays: `-nic model "tap"`},
	{rule: "-nic names no netdev",
		ok: func(m *capture.Manifest) { m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, ID: "nic1"}) },
		bad: func(m *capture.Manifest) {
			m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, ID: "nic1", Netdev: "n1"})
		},
		badSays: `-nic nic1 names a netdev`},
	{rule: "a device NIC has no model", okIsZero: true,
		bad: func(m *capture.Manifest) { m.Machine.NICs[0].Model = "e1000" }, badSays: `NIC nic0: a model belongs to -nic only`},
	{rule: "device driver allowlist",
		ok: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "virtio-balloon-pci", ID: "bal0", Addr: "0x6"})
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "vfio-pci", ID: "gpu0"})
		}, badSays: `driver "vfio-pci"`},
	{rule: "device addr is a PCI slot",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[0].Addr = "04.1" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Addr = "0x4.8" }, badSays: `addr "0x4.8"`},
	{rule: "device bus: the machine's or a declared device's",
		ok: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices,
				capture.Device{Driver: "virtio-serial-pci", ID: "vser0"},
				capture.Device{Driver: "virtconsole", Bus: "vser0.0", Props: map[string]string{"chardev": "ser0"}})
		},
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Bus = "vser0.0" }, badSays: `bus "vser0.0"`},
	{rule: "device bus: a root port's, named after its id (q35, as libvirt lays it out)",
		ok: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[3].Addr = "0x0.0x1"
		},
		bad:     func(m *capture.Manifest) { m.Machine.Devices[0].Bus, m.Machine.Devices[0].Addr = "pci.1", "0x0" },
		badSays: `bus "pci.1" is neither a machine's own nor one a device declared before it provides`},
	{rule: "device ids: one device each",
		ok: q35,
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[1].ID = "pci.1"
		},
		badSays: `device 1 (pcie-root-port pci.1): a device id twice`},
	{rule: "device bus: provided by a device declared before it",
		ok: q35,
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices = append(m.Machine.Devices[2:], m.Machine.Devices[:2]...) // the root ports last
		},
		badSays: `bus "pci.1"`},
	{rule: "device bus: a bridge's bus has no number",
		ok: q35,
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[2].Bus = "pci.1.0"
		},
		badSays: `bus "pci.1.0"`},
	{rule: "device bus: a numbered bus is a controller's",
		ok: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "qemu-xhci", ID: "usb", Addr: "0x7"},
				capture.Device{Driver: "usb-tablet", Bus: "usb.0"})
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "usb-tablet", Bus: "vda.0"}) // a disk: no bus
		},
		badSays: `bus "vda.0"`},
	{rule: "root ports plug into pcie.0 only",
		ok: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[0].Bus = "" // QEMU's default: the root bus
		},
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[1].Bus = "pci.1" // a root port under another
		},
		badSays: `a pcie-root-port on bus "pci.1": root ports plug into pcie.0 only`},
	{rule: "a root port has slot 0 only",
		ok: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[2].Addr = "00.0x3"
		},
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[2].Addr = "0x1"
		},
		badSays: `addr "0x1" on the root port pci.1: a root port has slot 0 only`},
	{rule: "root port chassis and port: 8 bits",
		ok: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[0].Props["chassis"], m.Machine.Devices[0].Props["port"] = "0xff", "255"
		},
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[0].Props["chassis"] = "256"
		},
		badSays: `property chassis: value "256"`},
	{rule: "root port port: 8 bits, as a number",
		ok: q35,
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[1].Props["port"] = "0x100"
		},
		badSays: `property port: value "0x100"`},
	{rule: "root port slot: 16 bits",
		ok: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[0].Props["slot"] = "65535"
		},
		bad: func(m *capture.Manifest) {
			q35(m)
			m.Machine.Devices[0].Props["slot"] = "65536"
		},
		badSays: `property slot: value "65536"`},
	{rule: "device addr: slot 0 to 31, function as a digit or in hex",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[0].Addr = "0x1f.0x7" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Addr = "0x20" }, badSays: `addr "0x20"`},
	{rule: "property values: bool",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[0].Props["ioeventfd"] = "yes" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Props["ioeventfd"] = "maybe" }, badSays: `property ioeventfd`},
	{rule: "property values: on, off or auto",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[0].Props["disable-legacy"] = "auto" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Props["disable-legacy"] = "never" }, badSays: `property disable-legacy`},
	{rule: "property values: number",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[0].Props["bootindex"] = "0x1" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Props["bootindex"] = "1e3" }, badSays: `property bootindex`},
	{rule: "property values: size",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[0].Props["logical_block_size"] = "4k" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Props["logical_block_size"] = "4 KiB" }, badSays: `property logical_block_size`},
	{rule: "property values: token",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[0].Props["serial"] = "ABC-123_x" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Props["serial"] = "a/b" }, badSays: `property serial`},
	{rule: "property values: empty only (romfile)",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[1].Props["romfile"] = "" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[1].Props["romfile"] = "efi-virtio.rom" }, badSays: `property romfile`},
	{rule: "property values: MAC",
		ok:  func(m *capture.Manifest) { m.Machine.Devices[1].Props["mac"] = "52:54:00:00:00:02" },
		bad: func(m *capture.Manifest) { m.Machine.Devices[1].Props["mac"] = "52-54-00-00-00-02" }, badSays: `property mac`},
	{rule: "property values: a carried drive", okIsZero: true,
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Props["drive"] = "disk1" }, badSays: `drive "disk1" is not a disk the checkpoint carries`},
	{rule: "property values: a declared netdev", okIsZero: true,
		bad: func(m *capture.Manifest) { m.Machine.Devices[1].Props["netdev"] = "n9" }, badSays: `property netdev`},
	{rule: "property values: a declared chardev",
		ok: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "isa-serial", Props: map[string]string{"chardev": "ser0"}})
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "isa-serial", Props: map[string]string{"chardev": "ser9"}})
		}, badSays: `property chardev`},
	{rule: "property values: a declared object",
		ok: func(m *capture.Manifest) {
			m.Machine.Objects = []capture.Object{{Type: "iothread", ID: "io0"}}
			m.Machine.Devices[0].Props["iothread"] = "io0"
		},
		bad: func(m *capture.Manifest) { m.Machine.Devices[0].Props["iothread"] = "io0" }, badSays: `property iothread`},
	{rule: "a device's netdev has its NIC entry", okIsZero: true,
		bad: func(m *capture.Manifest) {
			m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, ID: "n1"})
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "e1000", Props: map[string]string{"netdev": "n1"}})
		}, badSays: `property netdev`},
	{rule: "machine property allowlist",
		ok:  func(m *capture.Manifest) { m.Machine.Props = map[string]string{"smm": "off", "max-ram-below-4g": "2G"} },
		bad: func(m *capture.Manifest) { m.Machine.Props = map[string]string{"memory-encryption": "sev0"} }, badSays: `machine: property "memory-encryption"`},
	{rule: "CPU count",
		ok:  func(m *capture.Manifest) { m.Machine.CPU.Count = 4 },
		bad: func(m *capture.Manifest) { m.Machine.CPU.Count = 0 }, badSays: `CPU count 0`},
	{rule: "CPU topology",
		ok:  func(m *capture.Manifest) { m.Machine.CPU.Sockets, m.Machine.CPU.Cores = 1, 1 },
		bad: func(m *capture.Manifest) { m.Machine.CPU.Threads = 2000 }, badSays: `CPU topology number 2000`},
	{rule: "CPU features need a model",
		ok: func(m *capture.Manifest) { m.Machine.CPU.Features = []capture.Prop{{Name: "x2apic", Value: "off"}} },
		bad: func(m *capture.Manifest) {
			m.Machine.CPU.Model, m.Machine.CPU.Features = "", []capture.Prop{{Name: "x2apic", Value: "off"}}
		},
		badSays: `CPU features without a CPU model`},
	{rule: "CPU model is a token",
		ok:  func(m *capture.Manifest) { m.Machine.CPU.Model = "Skylake-Client-v4" },
		bad: func(m *capture.Manifest) { m.Machine.CPU.Model = "host,migratable=off" }, badSays: `CPU model "host,migratable=off"`},
	{rule: "CPU feature syntax",
		ok: func(m *capture.Manifest) {
			m.Machine.CPU.Features = []capture.Prop{{Name: "hv-spinlocks", Value: "0x1fff"}}
		},
		bad: func(m *capture.Manifest) { m.Machine.CPU.Features = []capture.Prop{{Name: "pmu", Value: "on,+x"}} }, badSays: `CPU feature "pmu"`},
	{rule: "RAM size",
		ok:  func(m *capture.Manifest) { m.Machine.RAM.Size = 512 << 20 },
		bad: func(m *capture.Manifest) { m.Machine.RAM.Size = 256<<20 + 1 }, badSays: `RAM size 268435457`},
	{rule: "RAM backend kind",
		ok:  func(m *capture.Manifest) { m.Machine.RAM.Backend = capture.RAMPlain },
		bad: func(m *capture.Manifest) { m.Machine.RAM.Backend = "file" }, badSays: `RAM backend "file"`},
	{rule: "memory backend id",
		ok:  func(m *capture.Manifest) { m.Machine.RAM.BackendID = "ram0" },
		bad: func(m *capture.Manifest) { m.Machine.RAM.BackendID = "vda" }, badSays: `memory backend id "vda" is also a device`},
	{rule: "serial ports name declared chardevs",
		ok:  func(m *capture.Manifest) { m.Machine.Serials = append(m.Machine.Serials, capture.Serial{None: true}) },
		bad: func(m *capture.Manifest) { m.Machine.Serials = []capture.Serial{{Chardev: "ser1"}} }, badSays: `chardev "ser1"`},
	{rule: "-global drivers",
		ok: func(m *capture.Manifest) {
			m.Machine.Globals = []capture.Global{{Driver: "PIIX4_PM", Property: "disable_s3", Value: "1"}}
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Globals = []capture.Global{{Driver: "cfi.pflash01", Property: "secure", Value: "on"}}
		},
		badSays: `driver "cfi.pflash01"`},
	{rule: "-global properties",
		ok: func(m *capture.Manifest) {
			m.Machine.Globals = []capture.Global{{Driver: "virtio-blk-pci", Property: "num-queues", Value: "2"}}
		},
		bad: func(m *capture.Manifest) {
			m.Machine.Globals = []capture.Global{{Driver: "virtio-blk-pci", Property: "drive", Value: "x"}}
		},
		badSays: `-global virtio-blk-pci: property drive`},
	{rule: "-rtc base",
		ok:  func(m *capture.Manifest) { m.Machine.RTC = map[string]string{"base": "2006-06-17T16:01:21"} },
		bad: func(m *capture.Manifest) { m.Machine.RTC = map[string]string{"base": "yesterday"} }, badSays: `-rtc base="yesterday"`},
	{rule: "-rtc clock and driftfix",
		ok:  func(m *capture.Manifest) { m.Machine.RTC = map[string]string{"clock": "vm", "driftfix": "slew"} },
		bad: func(m *capture.Manifest) { m.Machine.RTC = map[string]string{"clock": "realtime"} }, badSays: `-rtc clock="realtime"`},
	{rule: "-boot properties",
		ok:  func(m *capture.Manifest) { m.Machine.Boot = map[string]string{"order": "cd", "menu": "on"} },
		bad: func(m *capture.Manifest) { m.Machine.Boot = map[string]string{"once": "c d"} }, badSays: `-boot: property once`},
	{rule: "-vga types",
		ok:  func(m *capture.Manifest) { m.Machine.VGA = "none" },
		bad: func(m *capture.Manifest) { m.Machine.VGA = "qxl" }, badSays: `-vga "qxl"`},
	{rule: "-uuid syntax",
		ok:  func(m *capture.Manifest) { m.Machine.UUID = "6a2c4f3e-0d1b-4c5a-9e8f-7b6a5c4d3e2f" },
		bad: func(m *capture.Manifest) { m.Machine.UUID = "6a2c4f3e" }, badSays: `-uuid "6a2c4f3e"`},
	{rule: "flag allowlist",
		ok:  func(m *capture.Manifest) { m.Machine.Flags = append(m.Machine.Flags, "no-hpet") },
		bad: func(m *capture.Manifest) { m.Machine.Flags = append(m.Machine.Flags, "daemonize") }, badSays: `option -daemonize`},
	{rule: "kernel command line: printable, bounded",
		ok:  func(m *capture.Manifest) { m.Machine.Kernel.Append = strings.Repeat("a", 4096) },
		bad: func(m *capture.Manifest) { m.Machine.Kernel.Append = strings.Repeat("a", 4097) }, badSays: `kernel command line (4097 bytes`},
	{rule: "kernel files: names and digests",
		ok:  func(m *capture.Manifest) { m.Machine.Kernel.Kernel.SHA256 = strings.Repeat("ab", 32) },
		bad: func(m *capture.Manifest) { m.Machine.Kernel.Initrd.SHA256 = strings.Repeat("AB", 32) }, badSays: `kernel file "initrd"`},
	{rule: "no -dtb", okIsZero: true,
		bad: func(m *capture.Manifest) { m.Machine.Kernel.DTB = &capture.FileRef{Name: "board.dtb"} }, badSays: `-dtb`},
	{rule: "firmware file name",
		ok:  func(m *capture.Manifest) { m.Machine.Firmware = &capture.FileRef{Name: "bios-256k.bin"} },
		bad: func(m *capture.Manifest) { m.Machine.Firmware = &capture.FileRef{Name: "../bios.bin"} }, badSays: `firmware file "../bios.bin"`},
}

// q35 makes guestManifest a PCI Express machine as libvirt lays one out:
// two root ports on pcie.0 (pci.1, multifunction, at 00:01.0 and pci.2 at
// 00:01.1), the disk behind pci.1 and the NIC behind pci.2.
func q35(m *capture.Manifest) {
	mc := &m.Machine
	mc.Type = "pc-q35-7.2"
	mc.Devices[0].Bus, mc.Devices[0].Addr = "pci.1", "0x0"
	mc.Devices[1].Bus, mc.Devices[1].Addr = "pci.2", "0x0"
	mc.Devices = append([]capture.Device{
		{Driver: "pcie-root-port", ID: "pci.1", Bus: "pcie.0", Addr: "0x1", Props: map[string]string{"chassis": "1", "port": "8", "multifunction": "on"}},
		{Driver: "pcie-root-port", ID: "pci.2", Bus: "pcie.0", Addr: "0x1.0x1", Props: map[string]string{"chassis": "2", "port": "0x9", "hotplug": "off"}},
	}, mc.Devices...)
}

// TestValidateRules: every rule of the allowlist lets its allowed case
// through and refuses its other case, naming what it refused.
func TestValidateRules(t *testing.T) {
	for _, tc := range allowRules {
		t.Run(tc.rule, func(t *testing.T) {
			m := guestManifest()
			if !tc.okIsZero {
				tc.ok(m)
			}
			if _, err := validate(m); err != nil {
				t.Errorf("allowed case refused: %v", err)
			}
			m = guestManifest()
			tc.bad(m)
			_, err := validate(m)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.badSays) {
				t.Errorf("refused case: %v; want a refusal naming %s", err, tc.badSays)
			}
		})
	}
}

// planRules has one case per rule by which plan (plan.go) turns a valid
// description and the receiver's choices into QEMU's command line: the
// change, then argument pairs the command line must hold and strings it
// must not.
var planRules = []struct {
	rule   string
	change func(m *capture.Manifest, h *host)
	has    [][2]string // option, value ("" for an option without one)
	lacks  []string
}{
	{rule: "machine: type, accelerator, properties, RAM backend",
		change: func(m *capture.Manifest, h *host) { m.Machine.Props = map[string]string{"smm": "off"} },
		has:    [][2]string{{"-machine", "pc-i440fx-7.2,smm=off,memory-backend=pc.ram"}}},
	{rule: "TCG runs with its code buffer split (a service under MemoryDenyWriteExecute refuses it whole)",
		change: func(m *capture.Manifest, h *host) {},
		has:    [][2]string{{"-accel", "tcg,split-wx=on"}},
		lacks:  []string{"accel=tcg"}},
	{rule: "QEMU's default accelerator is TCG, split too",
		change: func(m *capture.Manifest, h *host) { m.Machine.Accel = "" },
		has:    [][2]string{{"-accel", "tcg,split-wx=on"}}},
	{rule: "KVM stays the machine's accelerator",
		change: func(m *capture.Manifest, h *host) { m.Machine.Accel = "kvm" },
		has:    [][2]string{{"-machine", "pc-i440fx-7.2,accel=kvm,memory-backend=pc.ram"}},
		lacks:  []string{"-accel", "split-wx"}},
	{rule: "CPU model and features",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.CPU.Features = []capture.Prop{{Name: "x2apic", Value: "off"}, {Name: "hv-spinlocks", Value: "0x1fff"}}
		},
		has: [][2]string{{"-cpu", "qemu64,x2apic=off,hv-spinlocks=0x1fff"}}},
	{rule: "CPU topology",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.CPU.Count, m.Machine.CPU.Sockets, m.Machine.CPU.Cores = 4, 2, 2
		},
		has: [][2]string{{"-smp", "4,sockets=2,cores=2"}}},
	{rule: "RAM in bytes when not whole MiB",
		change: func(m *capture.Manifest, h *host) { m.Machine.RAM.Size = 256<<20 + 4096 },
		has:    [][2]string{{"-m", "268439552B"}}},
	{rule: "RAM backend: private memfd for plain RAM, no block-name flag",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.RAM.Backend, m.Machine.RAM.IDIsBlockName = capture.RAMPlain, false
		},
		has:   [][2]string{{"-object", "memory-backend-memfd,id=pc.ram,size=268435456"}},
		lacks: []string{"share=on", "x-use-canonical-path-for-ramblock-id"}},
	{rule: "RAM backend: huge pages when the receiver has them",
		change: func(m *capture.Manifest, h *host) { h.hugePages = true },
		has: [][2]string{{"-object",
			"memory-backend-memfd,id=pc.ram,size=268435456,share=on,hugetlb=on,hugetlbsize=2M,prealloc=on,x-use-canonical-path-for-ramblock-id=off"}}},
	{rule: "no RAM backend without a backend id",
		change: func(m *capture.Manifest, h *host) { m.Machine.RAM.BackendID = "" },
		has:    [][2]string{{"-machine", "pc-i440fx-7.2"}},
		lacks:  []string{"memory-backend"}},
	{rule: "flags",
		change: func(m *capture.Manifest, h *host) { m.Machine.Flags = []string{"no-hpet", "no-shutdown"} },
		has:    [][2]string{{"-no-hpet", ""}, {"-no-shutdown", ""}},
		lacks:  []string{"-nodefaults"}},
	{rule: "seccomp sandbox when the build has it",
		change: func(m *capture.Manifest, h *host) { h.sandbox = false },
		lacks:  []string{"-sandbox"}},
	{rule: "kernel, initrd, append: the receiver's files",
		change: func(m *capture.Manifest, h *host) {},
		has:    [][2]string{{"-kernel", "/boot/vmlinuz"}, {"-initrd", "/boot/initrd"}, {"-append", "console=ttyS0 panic=1"}}},
	{rule: "a source booted from its disk gets no kernel",
		change: func(m *capture.Manifest, h *host) { m.Machine.Kernel = nil },
		lacks:  []string{"-kernel", "-initrd", "-append"}},
	{rule: "firmware: the receiver's",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Firmware, h.firmware = &capture.FileRef{Name: "bios-256k.bin"}, "/usr/share/seabios/bios-256k.bin"
		},
		has: [][2]string{{"-bios", "/usr/share/seabios/bios-256k.bin"}}},
	{rule: "objects",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Objects = []capture.Object{{Type: "iothread", ID: "io0", Props: map[string]string{"poll-max-ns": "0"}}}
		},
		has: [][2]string{{"-object", "iothread,id=io0,poll-max-ns=0"}}},
	{rule: "disks: received image by descriptor, read-only, under an overlay",
		change: func(m *capture.Manifest, h *host) {},
		has: [][2]string{{"-add-fd", "fd=3,set=1,opaque=disk-vda"},
			{"-blockdev", "driver=raw,node-name=ntc-base0,read-only=on,file.driver=file,file.filename=/dev/fdset/1"},
			{"-blockdev", "node-name=disk0,driver=qcow2,backing=ntc-base0,file.driver=file,file.filename=/w/disk-vda.qcow2"}},
		lacks: []string{"/store/sets"}},
	{rule: "disks attached by interface stay -drive",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Drives = []capture.Drive{{ID: "disk0", If: "virtio", Props: map[string]string{"index": "0"}}}
			m.Machine.Devices = m.Machine.Devices[1:]
		},
		has: [][2]string{{"-drive", "if=virtio,id=disk0,driver=qcow2,backing=ntc-base0,file.driver=file,file.filename=/w/disk-vda.qcow2,index=0"}}},
	{rule: "removable drives without a disk stay empty",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Drives = []capture.Drive{{ID: "cd0", If: "ide", Props: map[string]string{"media": "cdrom"}}}
		},
		has: [][2]string{{"-drive", "if=ide,id=cd0,media=cdrom"}}},
	{rule: "NIC backends: user mode, restricted while the network is off",
		change: func(m *capture.Manifest, h *host) {},
		has:    [][2]string{{"-netdev", "user,id=n0,restrict=on"}}},
	{rule: "-nic keeps model and MAC",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, Model: "e1000", MAC: "52:54:00:00:00:09"})
		},
		has: [][2]string{{"-nic", "user,id=ntc-nic1,model=e1000,mac=52:54:00:00:00:09,restrict=on"}}},
	{rule: "QEMU's default NIC made explicit while the network is off",
		change: func(m *capture.Manifest, h *host) { m.Machine.DefaultNIC = true },
		has:    [][2]string{{"-net", "nic,name=ntc-nic0"}, {"-net", "user,restrict=on"}}},
	{rule: "serial ports: the first into serial.log, the next into a file named after its chardev",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Chardevs = append(m.Machine.Chardevs, "ser1")
			m.Machine.Serials = append(m.Machine.Serials, capture.Serial{Chardev: "ser1"})
		},
		has: [][2]string{{"-chardev", "file,id=ser0,path=/w/serial.log"}, {"-chardev", "file,id=ser1,path=/w/chardev-ser1.log"},
			{"-serial", "chardev:ser0"}, {"-serial", "chardev:ser1"}}},
	{rule: "virtio serial ports: a socket in the work directory",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Chardevs = append(m.Machine.Chardevs, "agent")
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "virtio-serial-pci", ID: "vser0"},
				capture.Device{Driver: "virtserialport", Bus: "vser0.0", Props: map[string]string{"chardev": "agent", "name": "org.qemu.guest_agent.0"}})
		},
		has: [][2]string{{"-chardev", "socket,id=agent,path=/w/chardev-agent.sock,server=on,wait=off"}}},
	{rule: "other character devices: a file in the work directory",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Chardevs = append(m.Machine.Chardevs, "con1")
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "isa-serial", Props: map[string]string{"chardev": "con1"}})
		},
		has: [][2]string{{"-chardev", "file,id=con1,path=/w/chardev-con1.log"}}},
	{rule: "QEMU's default serial port, without -nodefaults, into serial.log",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Serials, m.Machine.Chardevs, m.Machine.Flags = nil, nil, nil
		},
		has: [][2]string{{"-chardev", "file,id=ntc-serial0,path=/w/serial.log"}, {"-serial", "chardev:ntc-serial0"}}},
	{rule: "-serial none",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Serials = append(m.Machine.Serials, capture.Serial{None: true})
		},
		has: [][2]string{{"-serial", "none"}}},
	{rule: "devices in order, with id, bus, addr and properties",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Devices[0].Bus = "pci.0"
			m.Machine.Devices[0].Props["bootindex"] = "1"
		},
		has: [][2]string{{"-device", "virtio-blk-pci,id=vda,bus=pci.0,addr=0x4,bootindex=1,drive=disk0"}}},
	{rule: "vmgenid: a new generation ID",
		change: func(m *capture.Manifest, h *host) {},
		has:    [][2]string{{"-device", "vmgenid,id=gen0,guid=auto"}},
		lacks:  []string{"guid=1234"}},
	{rule: "-global, -vga, -rtc, -boot, -uuid as the source had them",
		change: func(m *capture.Manifest, h *host) {
			m.Machine.Globals = []capture.Global{{Driver: "PIIX4_PM", Property: "disable_s3", Value: "1"}}
			m.Machine.VGA = "std"
			m.Machine.RTC = map[string]string{"base": "utc", "clock": "vm"}
			m.Machine.Boot = map[string]string{"order": "c"}
			m.Machine.UUID = "6a2c4f3e-0d1b-4c5a-9e8f-7b6a5c4d3e2f"
		},
		has: [][2]string{{"-global", "PIIX4_PM.disable_s3=1"}, {"-vga", "std"}, {"-rtc", "base=utc,clock=vm"},
			{"-boot", "order=c"}, {"-uuid", "6a2c4f3e-0d1b-4c5a-9e8f-7b6a5c4d3e2f"}}},
	{rule: "ntc's own sockets, pid file, paused for the incoming stream",
		change: func(m *capture.Manifest, h *host) {},
		has: [][2]string{{"-qmp", "unix:/w/qmp.sock,server=on,wait=off"}, {"-qmp", "unix:/w/ntc-qmp.sock,server=on,wait=off"},
			{"-pidfile", "/w/qemu.pid"}, {"-S", ""}, {"-incoming", "defer"}}},
}

// TestPlanRules checks each rule of plan on its own case.
func TestPlanRules(t *testing.T) {
	for _, tc := range planRules {
		t.Run(tc.rule, func(t *testing.T) {
			m, h := guestManifest(), testHost
			tc.change(m, &h)
			p, err := plan(m, h)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.has {
				if !hasArg(p.Argv, want[0], want[1]) {
					t.Errorf("argv lacks %s %q:\n%q", want[0], want[1], p.Argv)
				}
			}
			joined := strings.Join(p.Argv, " ")
			for _, s := range tc.lacks {
				if strings.Contains(joined, s) {
					t.Errorf("argv holds %q:\n%q", s, p.Argv)
				}
			}
			confined(t, p.Argv, h)
		})
	}
}

// hasArg reports whether argv holds option followed by value (or, for
// value "", the option alone).
func hasArg(argv []string, option, value string) bool {
	for i, a := range argv {
		if a != option {
			continue
		}
		if value == "" || (i+1 < len(argv) && argv[i+1] == value) {
			return true
		}
	}
	return false
}
