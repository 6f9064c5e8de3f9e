package capture

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/libvirt/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDescribeDomainMatchesArgv: the description read from a real
// domain's live XML (libvirt 9.0, the test guest's domain) is the one read
// from the command line libvirt started its QEMU with, except where the
// command line is libvirt's business: its master-key secret and audio
// backend (which the command-line reader cannot place), its block node
// names, the RAM size (QEMU tells it), dump-guest-core, and the CPU features the XML spells out (with
// check='full' libvirt lists what QEMU enabled beyond the model).
//
// The q35 domain (domain-q35.xml, argv-q35.txt) has its disk and NIC each
// behind a pcie-root-port of its own, and a spare one, as libvirt lays out
// a PCI Express machine: the root ports come first, named pci.N after
// their index, on pcie.0.
func TestDescribeDomainMatchesArgv(t *testing.T) {
	for _, tc := range []struct{ xml, argv string }{{"domain.xml", "argv.txt"}, {"domain-q35.xml", "argv-q35.txt"}} {
		t.Run(tc.xml, func(t *testing.T) { describeDomainMatchesArgv(t, tc.xml, tc.argv) })
	}
}

func describeDomainMatchesArgv(t *testing.T, xmlFile, argvFile string) {
	fromXML, err := describeDomain(readTestdata(t, xmlFile))
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Split(strings.TrimSpace(string(readTestdata(t, argvFile))), "\n")
	fromArgv, err := describeArgv(argv)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"-object secret", "-audiodev"}; !reflect.DeepEqual(fromArgv.Unsupported, want) {
		t.Errorf("the command line's description: unsupported %q, want %q", fromArgv.Unsupported, want)
	}
	if len(fromXML.Unsupported) != 0 {
		t.Errorf("the XML's description: unsupported %q", fromXML.Unsupported)
	}
	if want := []Prop{{"hypervisor", "on"}, {"lahf_lm", "on"}}; !reflect.DeepEqual(fromXML.CPU.Features, want) {
		t.Errorf("CPU features from the XML %v, want %v", fromXML.CPU.Features, want)
	}
	fromArgv.Unsupported = nil
	fromArgv.RAM.Size = 256 << 20 // QEMU says it (-m 256)
	delete(fromArgv.Props, "dump-guest-core")
	fromXML.CPU.Features = nil
	for i, d := range fromArgv.Devices {
		if d.Props["drive"] == "libvirt-1-format" {
			fromArgv.Devices[i].Props["drive"] = DomainDrive("vda")
		}
	}
	slices.Sort(fromArgv.Flags)
	slices.Sort(fromXML.Flags)
	a, _ := json.MarshalIndent(fromArgv, "", " ")
	x, _ := json.MarshalIndent(fromXML, "", " ")
	if string(a) != string(x) {
		t.Errorf("from the command line:\n%s\nfrom the domain XML:\n%s", a, x)
	}
}

// TestDescribeDomainDevices: each kind of device libvirt writes becomes
// the -device libvirt starts for it, at its address; what ntc cannot
// recreate is named.
func TestDescribeDomainDevices(t *testing.T) {
	def := `<domain type='kvm'><uuid>0b3d8bde-54a5-4b45-a2c0-6f7e0d3f4b11</uuid>
<memory unit='MiB'>512</memory>
<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
<vcpu>4</vcpu>
<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
<features><acpi/><vmport state='off'/></features>
<cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='2' threads='2'/></cpu>
<clock offset='localtime'><timer name='hpet' present='no'/></clock>
<devices>
 <emulator>/usr/bin/qemu-system-x86_64</emulator>
 <disk type='file' device='disk'><target dev='vdb' bus='virtio'/><boot order='1'/><alias name='virtio-disk1'/>
  <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></disk>
 <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
 <controller type='usb' index='0' model='qemu-xhci'><alias name='usb'/><address type='pci' bus='0x02' slot='0x00' function='0x0'/></controller>
 <controller type='sata' index='0'><alias name='ide'/><address type='pci' bus='0x00' slot='0x1f' function='0x2'/></controller>
 <controller type='pci' index='2' model='pcie-root-port'><model name='pcie-root-port'/><target chassis='2' port='0x11'/><alias name='pci.2'/>
  <address type='pci' bus='0x00' slot='0x02' function='0x1'/></controller>
 <controller type='pci' index='0' model='pcie-root'><alias name='pcie.0'/></controller>
 <controller type='pci' index='1' model='pcie-root-port'><model name='pcie-root-port'/><target chassis='1' port='0x10'/><alias name='pci.1'/>
  <address type='pci' bus='0x00' slot='0x02' function='0x0' multifunction='on'/></controller>
 <controller type='pci' index='3' model='pcie-root-port'><model name='ioh3420'/><target chassis='3' port='0x12'/><alias name='pci.3'/>
  <address type='pci' bus='0x00' slot='0x02' function='0x2'/></controller>
 <controller type='pci' index='4' model='pcie-root-port'><model name='pcie-root-port'/><target chassis='300' port='0x13'/><alias name='pci.4'/>
  <address type='pci' bus='0x00' slot='0x02' function='0x3'/></controller>
 <controller type='pci' index='5' model='pcie-root-port'><alias name='pci.5'/></controller>
 <controller type='pci' index='6' model='pcie-to-pci-bridge'><alias name='pci.6'/><address type='pci' bus='0x01' slot='0x00' function='0x0'/></controller>
 <interface type='network'><mac address='52:54:00:12:34:56'/><model type='virtio'/><alias name='net0'/>
  <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></interface>
 <serial type='pty'><target type='isa-serial' port='0'/><alias name='serial0'/></serial>
 <console type='pty'><target type='serial' port='0'/><alias name='serial0'/></console>
 <input type='tablet' bus='usb'><alias name='input0'/><address type='usb' bus='0' port='1'/></input>
 <input type='mouse' bus='ps2'/>
 <graphics type='vnc' port='-1'/>
 <video><model type='vga' vram='16384'/><alias name='video0'/><address type='pci' bus='0x00' slot='0x01' function='0x0'/></video>
 <memballoon model='virtio'><alias name='balloon0'/><address type='pci' bus='0x05' slot='0x00' function='0x0'/></memballoon>
 <rng model='virtio'><backend model='random'>/dev/urandom</backend><alias name='rng0'/>
  <address type='pci' bus='0x06' slot='0x00' function='0x0'/></rng>
 <sound model='ich9'/>
</devices></domain>`
	m, err := describeDomain([]byte(def))
	if err != nil {
		t.Fatal(err)
	}
	want := Machine{
		Arch: "x86_64", Type: "pc-q35-7.2", Accel: "kvm", Props: map[string]string{"usb": "off", "vmport": "off"},
		CPU: CPU{Model: "host", Count: 4, Sockets: 1, Cores: 2, Threads: 2},
		RAM: MachineRAM{Size: 512 << 20, Backend: RAMShared, BackendID: "pc.ram"},
		Devices: []Device{
			{Driver: "pcie-root-port", ID: "pci.1", Bus: "pcie.0", Addr: "0x2", Props: map[string]string{"chassis": "1", "port": "16", "multifunction": "on"}},
			{Driver: "pcie-root-port", ID: "pci.2", Bus: "pcie.0", Addr: "0x2.0x1", Props: map[string]string{"chassis": "2", "port": "17"}},
			{Driver: "ioh3420", ID: "pci.3", Bus: "pcie.0", Addr: "0x2.0x2", Props: map[string]string{"chassis": "3", "port": "18"}},
			{Driver: "virtio-blk-pci", ID: "virtio-disk1", Bus: "pci.3", Addr: "0x0", Props: map[string]string{"drive": "drive-vdb", "bootindex": "1"}},
			{Driver: "qemu-xhci", ID: "usb", Bus: "pci.2", Addr: "0x0"},
			{Driver: "virtio-net-pci", ID: "net0", Bus: "pci.1", Addr: "0x0", Props: map[string]string{"netdev": "hostnet0", "mac": "52:54:00:12:34:56"}},
			{Driver: "isa-serial", ID: "serial0", Props: map[string]string{"chardev": "charserial0", "index": "0"}},
			{Driver: "usb-tablet", ID: "input0", Bus: "usb.0", Props: map[string]string{"port": "1"}},
			{Driver: "VGA", ID: "video0", Bus: "pcie.0", Addr: "0x1", Props: map[string]string{"vgamem_mb": "16"}},
			{Driver: "virtio-balloon-pci", ID: "balloon0", Bus: "pci.5", Addr: "0x0"},
			{Driver: "virtio-rng-pci", ID: "rng0", Bus: "pci.6", Addr: "0x0", Props: map[string]string{"rng": "objrng0"}},
		},
		NICs:     []NIC{{ID: "net0", Netdev: "hostnet0", MAC: "52:54:00:12:34:56"}},
		Chardevs: []string{"charserial0"},
		Objects:  []Object{{Type: "rng-builtin", ID: "objrng0"}},
		RTC:      map[string]string{"base": "localtime"},
		Boot:     map[string]string{"strict": "on"},
		UUID:     "0b3d8bde-54a5-4b45-a2c0-6f7e0d3f4b11",
		Flags:    []string{"nodefaults", "no-shutdown", "no-hpet"},
		Unsupported: []string{"pcie-root-port chassis=300", "controller pci.5 without a PCI address", "controller pci model pcie-to-pci-bridge",
			"disk sda (cdrom, read-only media)", "sound device"},
	}
	if !reflect.DeepEqual(m, want) {
		g, _ := json.MarshalIndent(m, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("got\n%s\nwant\n%s", g, w)
	}
}

func TestDescribeDomainRejects(t *testing.T) {
	for _, def := range []string{
		``,
		`<domain`,
		`<domain type='qemu'><memory unit='parsec'>1</memory></domain>`,
		`<domain type='qemu'><memory>-4</memory></domain>`,
		`<domain type='qemu'><memory unit='TiB'>100000</memory></domain>`,
		`<domain type='qemu'><memory unit='MiB'>64</memory>` + strings.Repeat(" ", maxDomainXML) + `</domain>`,
	} {
		if m, err := describeDomain([]byte(def)); err == nil {
			t.Errorf("describeDomain(%.60q) = %+v, want an error", def, m)
		}
	}
}

// FuzzDescribeDomain: no domain XML makes the reader panic.
func FuzzDescribeDomain(f *testing.F) {
	f.Add(readTestdata(f, "domain.xml"))
	f.Add(readTestdata(f, "domain-q35.xml"))
	f.Add([]byte(`<domain type='kvm'><memory>1024</memory><devices><interface><model type='virtio'/><address type='pci' bus='0x1' slot='0x2' function='0x9'/></interface></devices></domain>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		describeDomain(b)
	})
}
