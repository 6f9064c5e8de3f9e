package capture

// The machine description of a libvirt domain, from its live XML
// (virDomainGetXMLDesc) rather than from the command line of the QEMU
// libvirt started: the XML is libvirt's own account of the machine, with
// every device's alias (QEMU's qdev id) and address filled in once the
// domain runs. The description is the one describeArgv makes of the
// command line libvirt 9.0 builds from that XML (TestDescribeDomainMatchesArgv
// compares them on a real domain's XML and command line), except for the
// disks' drive names: a disk's drive is "drive-" + its target ("drive-vda"),
// a name that stays while libvirt renames its block nodes at every
// snapshot. What the XML holds that this code does not translate is named
// in Machine.Unsupported, and a receiver refuses to resume it.

import (
	"cmp"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ntc-project/ntc/qemu"
)

// domainXML is the part of a libvirt domain XML a machine description
// reads.
type domainXML struct {
	Type   string `xml:"type,attr"`
	UUID   string `xml:"uuid"`
	Memory struct {
		Value int64  `xml:",chardata"`
		Unit  string `xml:"unit,attr"`
	} `xml:"memory"`
	MaxMemory *struct{} `xml:"maxMemory"`
	Backing   *struct {
		HugePages *struct{} `xml:"hugepages"`
		Source    struct {
			Type string `xml:"type,attr"`
		} `xml:"source"`
		Access struct {
			Mode string `xml:"mode,attr"`
		} `xml:"access"`
	} `xml:"memoryBacking"`
	VCPU struct {
		Value   int    `xml:",chardata"`
		Current string `xml:"current,attr"`
	} `xml:"vcpu"`
	VCPUs *struct{} `xml:"vcpus"`
	OS    struct {
		Type struct {
			Arch    string `xml:"arch,attr"`
			Machine string `xml:"machine,attr"`
		} `xml:"type"`
		Loader *struct {
			Type  string `xml:"type,attr"`
			Value string `xml:",chardata"`
		} `xml:"loader"`
		Boot []struct {
			Dev string `xml:"dev,attr"`
		} `xml:"boot"`
		Kernel  string `xml:"kernel"`
		Initrd  string `xml:"initrd"`
		Cmdline string `xml:"cmdline"`
		DTB     string `xml:"dtb"`
	} `xml:"os"`
	Features *struct {
		ACPI   *struct{} `xml:"acpi"`
		VMPort *struct {
			State string `xml:"state,attr"`
		} `xml:"vmport"`
		SMM *struct {
			State string `xml:"state,attr"`
		} `xml:"smm"`
	} `xml:"features"`
	CPU *struct {
		Mode  string `xml:"mode,attr"`
		Model string `xml:"model"`
		Topo  *struct {
			Sockets int `xml:"sockets,attr"`
			Dies    int `xml:"dies,attr"`
			Cores   int `xml:"cores,attr"`
			Threads int `xml:"threads,attr"`
		} `xml:"topology"`
		Features []struct {
			Policy string `xml:"policy,attr"`
			Name   string `xml:"name,attr"`
		} `xml:"feature"`
		NUMA *struct{} `xml:"numa"`
	} `xml:"cpu"`
	Clock struct {
		Offset string `xml:"offset,attr"`
		Timers []struct {
			Name    string `xml:"name,attr"`
			Present string `xml:"present,attr"`
		} `xml:"timer"`
	} `xml:"clock"`
	Devices struct {
		Items []domainDevice `xml:",any"`
	} `xml:"devices"`
}

// domainDevice is any element under <devices>.
type domainDevice struct {
	XMLName xml.Name
	Type    string `xml:"type,attr"`
	Device  string `xml:"device,attr"`
	Model   string `xml:"model,attr"`
	Bus     string `xml:"bus,attr"`
	Index   string `xml:"index,attr"`
	Alias   struct {
		Name string `xml:"name,attr"`
	} `xml:"alias"`
	Address *domainAddress `xml:"address"`
	Target  struct {
		Dev     string `xml:"dev,attr"`
		Bus     string `xml:"bus,attr"`
		Type    string `xml:"type,attr"`
		Port    string `xml:"port,attr"`
		Chassis string `xml:"chassis,attr"` // of a PCIe root port
	} `xml:"target"`
	ModelElem struct {
		Type string `xml:"type,attr"`
		Name string `xml:"name,attr"`
		VRAM string `xml:"vram,attr"`
	} `xml:"model"`
	MAC struct {
		Address string `xml:"address,attr"`
	} `xml:"mac"`
	Boot struct {
		Order string `xml:"order,attr"`
	} `xml:"boot"`
	ReadOnly *struct{} `xml:"readonly"`
	Source   struct {
		File string `xml:"file,attr"`
		Dev  string `xml:"dev,attr"`
	} `xml:"source"`
	Backend struct {
		Model string `xml:"model,attr"`
	} `xml:"backend"`
}

type domainAddress struct {
	Type          string `xml:"type,attr"`
	Bus           string `xml:"bus,attr"`
	Slot          string `xml:"slot,attr"`
	Function      string `xml:"function,attr"`
	Multifunction string `xml:"multifunction,attr"`
	Port          string `xml:"port,attr"`
}

// pci returns the bus and addr of a PCI address as libvirt writes them on
// QEMU's command line: the bus with index 0 is root ("pci.0" on a PC,
// "pcie.0" on a q35), bus N is the controller with index N, whose id
// libvirt makes "pci.N"; addr is "0x2", or "0x1.0x2" for a function.
// ok is false for another address type.
func (a *domainAddress) pci(root string) (bus, addr string, ok bool) {
	if a == nil || a.Type != "pci" {
		return "", "", false
	}
	b, err1 := strconv.ParseUint(strings.TrimPrefix(a.Bus, "0x"), 16, 8)
	s, err2 := strconv.ParseUint(strings.TrimPrefix(a.Slot, "0x"), 16, 8)
	f, err3 := strconv.ParseUint(strings.TrimPrefix(cmp.Or(a.Function, "0x0"), "0x"), 16, 8)
	if err1 != nil || err2 != nil || err3 != nil || s > 31 || f > 7 {
		return "", "", false
	}
	addr = fmt.Sprintf("0x%x", s)
	if f != 0 {
		addr += fmt.Sprintf(".0x%x", f)
	}
	bus = fmt.Sprintf("pci.%d", b)
	if b == 0 {
		bus = root
	}
	return bus, addr, true
}

// DomainDrive is the drive name a description from a domain XML gives
// the disk with target dev ("vda" → "drive-vda").
func DomainDrive(dev string) string { return "drive-" + dev }

// describeDomain reads a libvirt domain's live XML into a machine
// description (see the top of this file). QMP facts (the versioned type,
// RAM size, CPU count, target) are filled in by describeMachine as for a
// command line.
func describeDomain(def []byte) (Machine, error) {
	var m Machine
	if len(def) > maxDomainXML {
		return m, fmt.Errorf("domain XML of %d bytes, over %d", len(def), maxDomainXML)
	}
	var d domainXML
	if err := xml.Unmarshal(def, &d); err != nil {
		return m, fmt.Errorf("decode libvirt's domain XML: %w", err)
	}
	unsupported := func(format string, a ...any) {
		what := fmt.Sprintf(format, a...)
		if !slices.Contains(m.Unsupported, what) {
			m.Unsupported = append(m.Unsupported, what)
		}
	}
	m.Arch, m.Type = d.OS.Type.Arch, d.OS.Type.Machine
	switch d.Type {
	case "qemu":
		m.Accel = "tcg"
	case "kvm":
		m.Accel = "kvm"
	default:
		unsupported("domain type %s", d.Type)
	}
	m.UUID = d.UUID
	// libvirt builds every device itself (-nodefaults), gives USB
	// controllers as devices (-machine usb=off) and keeps QEMU for a
	// shutdown it handles (-no-shutdown).
	m.Flags = []string{"nodefaults", "no-shutdown"}
	m.Props = map[string]string{"usb": "off"}
	if x86 := m.Arch == "x86_64" || m.Arch == "i386"; x86 && (d.Features == nil || d.Features.ACPI == nil) {
		m.Flags = append(m.Flags, "no-acpi")
	}
	if f := d.Features; f != nil {
		if f.VMPort != nil && f.VMPort.State != "" {
			m.Props["vmport"] = f.VMPort.State
		}
		if f.SMM != nil && f.SMM.State != "" {
			m.Props["smm"] = f.SMM.State
		}
	}
	for _, t := range d.Clock.Timers {
		if t.Name == "hpet" && t.Present == "no" {
			m.Flags = append(m.Flags, "no-hpet")
		}
	}
	switch d.Clock.Offset {
	case "", "utc":
		m.RTC = map[string]string{"base": "utc"}
	case "localtime":
		m.RTC = map[string]string{"base": "localtime"}
	default:
		unsupported("clock offset %s", d.Clock.Offset)
	}
	m.Boot = map[string]string{"strict": "on"}

	size, err := kibSize(d.Memory.Value, d.Memory.Unit)
	if err != nil {
		return m, fmt.Errorf("domain XML memory: %w", err)
	}
	m.RAM = MachineRAM{Size: size, Backend: RAMPlain, BackendID: "pc.ram"}
	if d.MaxMemory != nil {
		unsupported("maxMemory (memory hotplug)")
	}
	if b := d.Backing; b != nil {
		switch {
		case b.HugePages != nil:
			m.RAM.Backend = RAMHugePages
		case b.Access.Mode == "shared":
			m.RAM.Backend = RAMShared
		case b.Source.Type == "memfd":
			m.RAM.Backend = RAMMemfd
		case b.Source.Type == "file":
			unsupported("memoryBacking source file")
		}
	}

	m.CPU.Count = d.VCPU.Value
	if d.VCPU.Current != "" && d.VCPU.Current != strconv.Itoa(d.VCPU.Value) {
		unsupported("vcpu current= (CPU hotplug)")
	}
	if d.VCPUs != nil {
		unsupported("vcpus (CPU hotplug)")
	}
	m.CPU.Sockets, m.CPU.Cores, m.CPU.Threads = m.CPU.Count, 1, 1
	if c := d.CPU; c != nil {
		switch c.Mode {
		case "", "custom":
			m.CPU.Model = c.Model
		case "host-passthrough", "maximum":
			m.CPU.Model = map[string]string{"host-passthrough": "host", "maximum": "max"}[c.Mode]
		default:
			unsupported("cpu mode %s", c.Mode)
		}
		for _, f := range c.Features {
			switch f.Policy {
			case "require", "force":
				m.CPU.Features = append(m.CPU.Features, Prop{f.Name, "on"})
			case "disable", "forbid":
				m.CPU.Features = append(m.CPU.Features, Prop{f.Name, "off"})
			}
		}
		if t := c.Topo; t != nil {
			m.CPU.Sockets, m.CPU.Cores, m.CPU.Threads = t.Sockets, t.Cores, t.Threads
			if t.Dies > 1 {
				m.CPU.Dies = t.Dies
			}
		}
		if c.NUMA != nil {
			unsupported("cpu numa")
		}
	}

	if d.OS.Kernel != "" {
		m.Kernel = &Kernel{Append: d.OS.Cmdline}
		if m.Kernel.Kernel, err = fileRef(d.OS.Kernel); err != nil {
			return m, err
		}
		if d.OS.Initrd != "" {
			ref, err := fileRef(d.OS.Initrd)
			if err != nil {
				return m, err
			}
			m.Kernel.Initrd = &ref
		}
		if d.OS.DTB != "" {
			ref, err := fileRef(d.OS.DTB)
			if err != nil {
				return m, err
			}
			m.Kernel.DTB = &ref
		}
	}
	if l := d.OS.Loader; l != nil && strings.TrimSpace(l.Value) != "" {
		if l.Type == "pflash" {
			unsupported("loader type pflash")
		} else {
			ref, err := fileRef(strings.TrimSpace(l.Value))
			if err != nil {
				return m, err
			}
			m.Firmware = &ref
		}
	}
	bootOrder(&d)
	// The root bus is pcie.0 on machines with a pcie-root controller
	// (q35), else pci.0. Controllers that provide PCI buses come first,
	// parents before children (by index, as libvirt orders them on the
	// command line): a -device names its bus after that bus exists.
	root := "pci.0"
	var buses, others []domainDevice
	for _, dev := range d.Devices.Items {
		switch {
		case dev.XMLName.Local == "controller" && dev.Type == "pci" && dev.Model == "pcie-root":
			root = "pcie.0"
		case dev.XMLName.Local == "controller" && dev.Type == "pci" && dev.Model != "pci-root":
			buses = append(buses, dev)
			continue
		}
		others = append(others, dev)
	}
	slices.SortStableFunc(buses, func(a, b domainDevice) int { return cmp.Compare(atoiOr(a.Index, -1), atoiOr(b.Index, -1)) })
	for _, dev := range append(buses, others...) {
		describeDomainDevice(&m, dev, root, unsupported)
	}
	return m, nil
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

// bootOrder gives devices the boot order libvirt gives them for
// <os><boot dev=…/> (the first disk for "hd", the first CD-ROM for
// "cdrom", the first interface for "network", in the listed order) when
// no device has a <boot order> of its own.
func bootOrder(d *domainXML) {
	for _, dev := range d.Devices.Items {
		if dev.Boot.Order != "" {
			return
		}
	}
	for i, b := range d.OS.Boot {
		for j := range d.Devices.Items {
			dev := &d.Devices.Items[j]
			kind := dev.XMLName.Local
			if (b.Dev == "hd" && kind == "disk" && dev.Device == "disk") || (b.Dev == "cdrom" && kind == "disk" && dev.Device == "cdrom") ||
				(b.Dev == "network" && kind == "interface") {
				dev.Boot.Order = strconv.Itoa(i + 1)
				break
			}
		}
	}
}

// kibSize converts a libvirt memory value in unit (default KiB) to bytes.
func kibSize(v int64, unit string) (int64, error) {
	mult := map[string]int64{"": 1 << 10, "KiB": 1 << 10, "k": 1 << 10, "K": 1 << 10, "MiB": 1 << 20, "M": 1 << 20,
		"GiB": 1 << 30, "G": 1 << 30, "TiB": 1 << 40, "T": 1 << 40, "b": 1, "bytes": 1, "KB": 1000, "MB": 1e6, "GB": 1e9}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unit %q", unit)
	}
	if v <= 0 || v > (1<<46)/mult {
		return 0, fmt.Errorf("size %d %s", v, unit)
	}
	return v * mult, nil
}

// pciDevice is a -device on the PCI address of dev, under the root bus
// root.
func pciDevice(driver string, dev domainDevice, root string) (Device, bool) {
	bus, addr, ok := dev.Address.pci(root)
	d := Device{Driver: driver, ID: dev.Alias.Name, Bus: bus, Addr: addr}
	if ok && dev.Address.Multifunction == "on" {
		d.set("multifunction", "on")
	}
	return d, ok
}

func (d *Device) set(k, v string) {
	if v == "" {
		return
	}
	if d.Props == nil {
		d.Props = map[string]string{}
	}
	d.Props[k] = v
}

// describeDomainDevice adds what one element of <devices> puts into the
// machine.
func describeDomainDevice(m *Machine, dev domainDevice, root string, unsupported func(string, ...any)) {
	kind := dev.XMLName.Local
	add := func(d Device, ok bool) {
		if !ok {
			unsupported("%s %s without a PCI address", kind, cmp.Or(dev.Alias.Name, dev.Model))
			return
		}
		m.Devices = append(m.Devices, d)
	}
	switch kind {
	case "emulator", "audio", "graphics":
		// The receiver's own binary; host-side sound and display.
	case "disk":
		switch {
		case dev.Device != "disk" || dev.ReadOnly != nil:
			unsupported("disk %s (%s, read-only media)", dev.Target.Dev, cmp.Or(dev.Device, "disk"))
		case dev.Target.Bus != "virtio":
			unsupported("disk %s on bus %s", dev.Target.Dev, dev.Target.Bus)
		default:
			d, ok := pciDevice("virtio-blk-pci", dev, root)
			d.set("drive", DomainDrive(dev.Target.Dev))
			d.set("bootindex", dev.Boot.Order)
			add(d, ok)
		}
	case "controller":
		switch {
		case dev.Type == "pci" && (dev.Model == "pci-root" || dev.Model == "pcie-root"):
		case dev.Type == "pci" && dev.Model == "pcie-root-port":
			// A PCIe root port: its id ("pci.N") names the bus it
			// provides; chassis and port as libvirt passes them.
			drv := cmp.Or(dev.ModelElem.Name, "pcie-root-port")
			if drv != "pcie-root-port" && drv != "ioh3420" {
				unsupported("pcie-root-port model %s", drv)
				return
			}
			d, ok := pciDevice(drv, dev, root)
			for k, v := range map[string]string{"chassis": dev.Target.Chassis, "port": dev.Target.Port} {
				n, err := strconv.ParseUint(v, 0, 8)
				if v != "" && err != nil {
					unsupported("pcie-root-port %s=%s", k, v)
					return
				}
				if v != "" {
					d.set(k, strconv.FormatUint(n, 10))
				}
			}
			add(d, ok)
		case dev.Type == "ide" || dev.Type == "fdc" || (dev.Type == "sata" && (dev.Address == nil || root == "pcie.0" && dev.Index == "0")):
			// The machine's own (PIIX3 IDE; ICH9 AHCI, which a q35 has at
			// 00:1f.2).
		case dev.Type == "usb":
			drv := map[string]string{"piix3-uhci": "piix3-usb-uhci", "qemu-xhci": "qemu-xhci", "nec-xhci": "nec-usb-xhci",
				"ich9-ehci1": "ich9-usb-ehci1", "ehci": "usb-ehci"}[dev.Model]
			switch {
			case dev.Model == "none":
			case drv == "":
				unsupported("USB controller model %s", dev.Model)
			default:
				add(pciDevice(drv, dev, root))
			}
		case dev.Type == "virtio-serial":
			add(pciDevice("virtio-serial-pci", dev, root))
		case dev.Type == "scsi" && dev.Model == "virtio-scsi":
			add(pciDevice("virtio-scsi-pci", dev, root))
		default:
			unsupported("controller %s model %s", dev.Type, dev.Model)
		}
	case "interface":
		drv := map[string]string{"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139",
			"vmxnet3": "vmxnet3"}[dev.ModelElem.Type]
		if drv == "" {
			unsupported("interface model %s", dev.ModelElem.Type)
			return
		}
		d, ok := pciDevice(drv, dev, root)
		netdev := "host" + dev.Alias.Name
		d.set("netdev", netdev)
		d.set("mac", dev.MAC.Address)
		d.set("bootindex", dev.Boot.Order)
		if ok {
			m.NICs = append(m.NICs, NIC{ID: dev.Alias.Name, Netdev: netdev, MAC: dev.MAC.Address})
		}
		add(d, ok)
	case "serial":
		if t := cmp.Or(dev.Target.Type, "isa-serial"); t != "isa-serial" {
			unsupported("serial target %s", t)
			return
		}
		chardev := "char" + dev.Alias.Name
		d := Device{Driver: "isa-serial", ID: dev.Alias.Name}
		d.set("chardev", chardev)
		d.set("index", dev.Target.Port)
		m.Chardevs = append(m.Chardevs, chardev)
		m.Devices = append(m.Devices, d)
	case "console":
		if dev.Target.Type != "serial" {
			unsupported("console target %s", dev.Target.Type)
		}
	case "input":
		switch {
		case dev.Bus == "ps2":
		case dev.Bus == "usb" && (dev.Type == "tablet" || dev.Type == "mouse" || dev.Type == "keyboard"):
			d := Device{Driver: map[string]string{"tablet": "usb-tablet", "mouse": "usb-mouse", "keyboard": "usb-kbd"}[dev.Type], ID: dev.Alias.Name}
			if a := dev.Address; a != nil && a.Type == "usb" {
				d.Bus = "usb.0"
				d.set("port", a.Port)
			}
			m.Devices = append(m.Devices, d)
		default:
			unsupported("input %s on %s", dev.Type, dev.Bus)
		}
	case "video":
		drv := map[string]string{"vga": "VGA", "cirrus": "cirrus-vga", "virtio": "virtio-vga", "bochs": "bochs-display"}[dev.ModelElem.Type]
		switch {
		case dev.ModelElem.Type == "none":
		case drv == "":
			unsupported("video model %s", dev.ModelElem.Type)
		default:
			d, ok := pciDevice(drv, dev, root)
			if v, err := strconv.Atoi(dev.ModelElem.VRAM); err == nil && drv == "VGA" {
				d.set("vgamem_mb", strconv.Itoa(v/1024))
			}
			add(d, ok)
		}
	case "memballoon":
		if dev.Model != "none" {
			if dev.Model != "virtio" {
				unsupported("memballoon model %s", dev.Model)
				return
			}
			add(pciDevice("virtio-balloon-pci", dev, root))
		}
	case "rng":
		if dev.Model != "virtio" {
			unsupported("rng model %s", dev.Model)
			return
		}
		obj := "obj" + dev.Alias.Name
		m.Objects = append(m.Objects, Object{Type: "rng-builtin", ID: obj})
		d, ok := pciDevice("virtio-rng-pci", dev, root)
		d.set("rng", obj)
		add(d, ok)
	default:
		unsupported("%s device", kind)
	}
}

// describeSource describes the source's machine from what its manager
// says of it: a libvirt domain's live XML, else QEMU's command line
// (/proc/PID/cmdline: the local user's own VM).
func describeSource(s *qemu.Session) (Machine, error) {
	if lm, ok := s.Monitor().(*libvirtMonitor); ok {
		return lm.describe()
	}
	argv, err := qemu.Cmdline(s.Peer().PID)
	if err != nil {
		return Machine{}, err
	}
	return describeArgv(argv)
}

// describe reads the machine description of the domain from its live XML,
// and the id of the RAM's memory backend from QEMU (libvirt names it after
// the machine: "pc.ram" on PCs).
func (m *libvirtMonitor) describe() (Machine, error) {
	def, err := m.l.DomainGetXMLDesc(m.dom, 0)
	if err != nil {
		return Machine{}, fmt.Errorf("libvirt domain %s: read its XML: %w", m.name, m.libvirtError(err))
	}
	mc, err := describeDomain([]byte(def))
	if err != nil {
		return mc, fmt.Errorf("libvirt domain %s: %w", m.name, err)
	}
	out, err := m.passthrough([]byte(`{"execute":"qom-get","arguments":{"path":"/machine","property":"memory-backend"}}`))
	var re *qemu.ReplyError
	if errors.As(err, &re) {
		return mc, nil // a QEMU before 5.0: libvirt's name, pc.ram, stands
	}
	if err != nil {
		return mc, fmt.Errorf("libvirt domain %s: the RAM's memory backend: %w", m.name, err)
	}
	var rep struct {
		Return string `json:"return"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return mc, fmt.Errorf("libvirt domain %s: the RAM's memory backend: %w", m.name, err)
	}
	mc.RAM.BackendID = ""
	if rep.Return != "" {
		mc.RAM.BackendID = rep.Return[strings.LastIndexByte(rep.Return, '/')+1:]
	}
	return mc, nil
}
