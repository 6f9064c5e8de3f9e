package capture

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	qemuopt "github.com/ntc-project/ntc/qemu/opt"
)

// Machine describes the source's machine as data: what a receiver needs to
// build, itself, a QEMU command line whose machine the migration stream
// fits. It names no host path, socket, program or file descriptor: the
// receiver makes its own disks, network backends, consoles and sockets
// (package resume checks every field against its allowlist).
type Machine struct {
	// Arch is the QEMU target ("x86_64"): the receiver runs
	// qemu-system-<arch> unless told which binary.
	Arch string `json:"arch"`
	// Type is the versioned machine type ("pc-i440fx-7.2", never the
	// alias "pc"): the destination must use it.
	Type  string `json:"type"`
	Accel string `json:"accel,omitempty"` // "tcg", "kvm"; "" QEMU's default
	// Props are the other -machine properties ("smm": "off").
	Props map[string]string `json:"props,omitempty"`
	CPU   CPU               `json:"cpu"`
	RAM   MachineRAM        `json:"ram"`
	// Devices are the -device options in order. A disk device's drive
	// names a Disk's Node (or a Drive), a NIC's netdev a NICs entry's
	// Netdev, a chardev one of Chardevs.
	Devices []Device `json:"devices,omitempty"`
	// Drives are the -drive options that attach a disk by interface
	// (if=virtio, ide, scsi, …) rather than through a -device; one with
	// no Disk of the same ID is an empty removable drive.
	Drives []Drive `json:"drives,omitempty"`
	// NICs are the network cards: devices with a netdev, and -nic options
	// (Model set).
	NICs []NIC `json:"nics,omitempty"`
	// DefaultNIC: the source had no -nodefaults and no network option, so
	// QEMU gave it its default NIC on a legacy hub.
	DefaultNIC bool `json:"default_nic,omitempty"`
	// Serials are the -serial ports in order.
	Serials []Serial `json:"serials,omitempty"`
	// Chardevs are the ids of the character devices the devices and
	// serial ports use; the receiver creates them (files, sockets).
	Chardevs []string `json:"chardevs,omitempty"`
	// Objects are the -object options other than the RAM backend
	// (iothread, rng-builtin).
	Objects []Object `json:"objects,omitempty"`
	Globals []Global `json:"globals,omitempty"`
	// Kernel is set when the source booted a kernel directly (-kernel).
	Kernel *Kernel `json:"kernel,omitempty"`
	// Firmware is the -bios the source named, nil for QEMU's own.
	Firmware *FileRef          `json:"firmware,omitempty"`
	VGA      string            `json:"vga,omitempty"`
	RTC      map[string]string `json:"rtc,omitempty"`
	Boot     map[string]string `json:"boot,omitempty"`
	UUID     string            `json:"uuid,omitempty"`
	// Flags are option names without argument or dash: "nodefaults",
	// "no-reboot", "no-shutdown", "no-hpet", "no-acpi".
	Flags []string `json:"flags,omitempty"`
	// Unsupported names what the source used that ntc cannot describe
	// (an option, a -object type): a receiver refuses to resume it.
	Unsupported []string `json:"unsupported,omitempty"`
}

// CPU is the -cpu and -smp of a machine.
type CPU struct {
	Model    string `json:"model,omitempty"` // "" QEMU's default
	Features []Prop `json:"features,omitempty"`
	Count    int    `json:"count"`
	Sockets  int    `json:"sockets,omitempty"`
	Dies     int    `json:"dies,omitempty"`
	Clusters int    `json:"clusters,omitempty"`
	Cores    int    `json:"cores,omitempty"`
	Threads  int    `json:"threads,omitempty"`
	MaxCPUs  int    `json:"maxcpus,omitempty"`
}

// Prop is a name and value kept in order.
type Prop struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// RAM backend kinds.
const (
	RAMPlain     = "plain"     // -m alone, or a private memory backend
	RAMMemfd     = "memfd"     // memory-backend-memfd, private
	RAMShared    = "shared"    // a backend with share=on
	RAMHugePages = "hugepages" // hugetlb=on
)

// MachineRAM is the guest's main RAM.
type MachineRAM struct {
	Size    int64  `json:"size"`
	Backend string `json:"backend"`
	// BackendID is the id of the memory backend -machine memory-backend
	// names ("" for -m alone): the RAM block the stream carries is named
	// after it.
	BackendID string `json:"backend_id,omitempty"`
	// IDIsBlockName: the backend had
	// x-use-canonical-path-for-ramblock-id=off (its id alone names the
	// RAM block, as "pc.ram" for -m alone).
	IDIsBlockName bool `json:"id_is_block_name,omitempty"`
}

// Device is one -device.
type Device struct {
	Driver string            `json:"driver"`
	ID     string            `json:"id,omitempty"`
	Bus    string            `json:"bus,omitempty"`
	Addr   string            `json:"addr,omitempty"`
	Props  map[string]string `json:"props,omitempty"`
}

// Drive is a -drive attached by interface.
type Drive struct {
	ID    string            `json:"id"`
	If    string            `json:"if"`
	Props map[string]string `json:"props,omitempty"` // index, bus, unit, media
}

// NIC is a network card.
type NIC struct {
	// ID is the device's id, or a -nic's id; set_link takes it.
	ID string `json:"id,omitempty"`
	// Netdev is the backend id the device names; the receiver creates it.
	Netdev string `json:"netdev,omitempty"`
	MAC    string `json:"mac,omitempty"`
	// Model is a -nic's device model ("virtio-net-pci"; "" the machine's
	// default); empty for a NIC among Devices.
	Model string `json:"model,omitempty"`
	// Nic: the NIC came from a -nic option.
	Nic bool `json:"nic,omitempty"`
}

// Serial is one -serial port.
type Serial struct {
	// Chardev is the character device it names ("" when the source gave
	// a backend inline: stdio, a file, a pty).
	Chardev string `json:"chardev,omitempty"`
	None    bool   `json:"none,omitempty"` // -serial none
}

// Object is one -object besides the RAM backend.
type Object struct {
	Type  string            `json:"type"`
	ID    string            `json:"id"`
	Props map[string]string `json:"props,omitempty"`
}

// Global is one -global driver.property=value.
type Global struct {
	Driver   string `json:"driver"`
	Property string `json:"property"`
	Value    string `json:"value"`
}

// Kernel is a directly booted kernel: its command line, and which files
// the source loaded (base names and digests, to compare: the receiver
// loads its own).
type Kernel struct {
	Append string   `json:"append,omitempty"`
	Kernel FileRef  `json:"kernel"`
	Initrd *FileRef `json:"initrd,omitempty"`
	DTB    *FileRef `json:"dtb,omitempty"`
}

// FileRef names a file the source loaded: its base name, size and
// SHA-256, never a path to open.
type FileRef struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
}

// Machine flags a description records (option names without the dash).
var machineFlags = []string{"nodefaults", "no-reboot", "no-shutdown", "no-hpet", "no-acpi"}

// noArg lists the QEMU options that take no argument; every other option
// takes one.
var noArg = map[string]bool{
	"-S": true, "-s": true, "-nodefaults": true, "-no-reboot": true, "-no-shutdown": true, "-snapshot": true,
	"-nographic": true, "-daemonize": true, "-enable-kvm": true, "-no-hpet": true, "-no-acpi": true,
	"-no-user-config": true, "-full-screen": true, "-usb": true, "-win2k-hack": true, "-no-fd-bootchk": true,
	"-alt-grab": true, "-ctrl-grab": true, "-no-quit": true, "-only-migratable": true, "-preconfig": true,
	"-semihosting": true, "-version": true, "-help": true, "-h": true, "-curses": true, "-no-frame": true,
	"-enable-fips": true, "-old-param": true, "-sdl": true, "-portrait": true, "-xen-attach": true,
}

// hostOnly lists options that concern only the source host (its monitors,
// display, logs, process) and are left out of the description.
var hostOnly = map[string]bool{
	"-qmp": true, "-qmp-pretty": true, "-monitor": true, "-mon": true, "-pidfile": true, "-daemonize": true,
	"-D": true, "-d": true, "-name": true, "-display": true, "-nographic": true, "-vnc": true, "-spice": true,
	"-sandbox": true, "-runas": true, "-chroot": true, "-msg": true, "-trace": true, "-S": true, "-incoming": true,
	"-loadvm": true, "-no-user-config": true, "-k": true, "-plugin": true, "-snapshot": true, "-overcommit": true,
	"-full-screen": true, "-alt-grab": true, "-ctrl-grab": true, "-no-quit": true, "-sdl": true, "-curses": true,
	"-blockdev": true, "-netdev": true, "-chardev": true, "-only-migratable": true, "-s": true, "-gdb": true,
	"-seed": true, "-action": true, "-compat": true,
	"-add-fd": true, // how ntc resume hands QEMU the received images: not part of the machine
}

// describeArgv reads the source's command line (its own VM: the local
// user started it) into a description; QMP facts (the versioned type, RAM
// size, CPU count) are filled in by describeMachine.
func describeArgv(argv []string) (Machine, error) {
	var m Machine
	if len(argv) == 0 {
		return m, fmt.Errorf("read QEMU's command line: empty")
	}
	if a, ok := strings.CutPrefix(filepath.Base(argv[0]), "qemu-system-"); ok {
		m.Arch = a
	}
	unsupported := func(what string) {
		if !slices.Contains(m.Unsupported, what) {
			m.Unsupported = append(m.Unsupported, what)
		}
	}
	parse := func(name, arg, implied string) (qemuopt.Opts, bool) {
		o, err := qemuopt.Parse(arg, implied)
		if err != nil {
			unsupported(name + " (" + err.Error() + ")")
			return nil, false
		}
		return o, true
	}
	var (
		netOptions bool
		backends   = map[string]qemuopt.Opts{} // memory backends by id
		chardevs   []string
	)
	useChardev := func(id string) {
		if id != "" && !slices.Contains(chardevs, id) {
			chardevs = append(chardevs, id)
		}
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			unsupported("a bare argument (an image given without -drive)")
			continue
		}
		name := "-" + strings.TrimLeft(a, "-")
		arg := ""
		if !noArg[name] {
			if i+1 >= len(argv) {
				return m, fmt.Errorf("read QEMU's command line: option %s lacks its argument", a)
			}
			arg = argv[i+1]
			i++
		}
		switch name {
		case "-machine", "-M":
			o, ok := parse(name, arg, "type")
			if !ok {
				continue
			}
			for _, p := range o {
				switch p.Key {
				case "type":
					m.Type = p.Value
				case "accel":
					m.Accel = p.Value
				case "memory-backend":
					m.RAM.BackendID = p.Value
				default:
					if m.Props == nil {
						m.Props = map[string]string{}
					}
					m.Props[p.Key] = p.Value
				}
			}
		case "-accel":
			if o, ok := parse(name, arg, "accel"); ok {
				m.Accel, _ = o.Get("accel")
			}
		case "-enable-kvm":
			m.Accel = "kvm"
		case "-cpu":
			o, ok := parse(name, arg, "model")
			if !ok {
				continue
			}
			for _, p := range o {
				switch {
				case p.Key == "model":
					m.CPU.Model = p.Value
				case strings.HasPrefix(p.Key, "+") && p.Value == "on":
					m.CPU.Features = append(m.CPU.Features, Prop{p.Key[1:], "on"})
				case strings.HasPrefix(p.Key, "-") && p.Value == "on":
					m.CPU.Features = append(m.CPU.Features, Prop{p.Key[1:], "off"})
				default:
					m.CPU.Features = append(m.CPU.Features, Prop{p.Key, p.Value})
				}
			}
		case "-smp":
			o, ok := parse(name, arg, "cpus")
			if !ok {
				continue
			}
			fields := map[string]*int{"cpus": &m.CPU.Count, "sockets": &m.CPU.Sockets, "dies": &m.CPU.Dies,
				"clusters": &m.CPU.Clusters, "cores": &m.CPU.Cores, "threads": &m.CPU.Threads, "maxcpus": &m.CPU.MaxCPUs}
			for _, p := range o {
				n, err := strconv.Atoi(p.Value)
				f, ok := fields[p.Key]
				if err != nil || !ok {
					unsupported("-smp " + p.Key)
					continue
				}
				*f = n
			}
		case "-m":
			o, ok := parse(name, arg, "size")
			if !ok {
				continue
			}
			for _, p := range o {
				if p.Key != "size" {
					unsupported("-m " + p.Key + " (memory hotplug)")
				}
			}
		case "-object":
			o, ok := parseObject(arg)
			if !ok {
				unsupported("-object (unreadable)")
				continue
			}
			typ, _ := o.Get("qom-type")
			id, _ := o.Get("id")
			switch {
			case strings.HasPrefix(typ, "memory-backend-"):
				backends[id] = o
			case typ == "iothread" || typ == "rng-builtin":
				ob := Object{Type: typ, ID: id}
				for _, p := range o {
					if p.Key != "qom-type" && p.Key != "id" {
						if ob.Props == nil {
							ob.Props = map[string]string{}
						}
						ob.Props[p.Key] = p.Value
					}
				}
				m.Objects = append(m.Objects, ob)
			default:
				unsupported("-object " + typ)
			}
		case "-device":
			o, ok := parseObjectLike(arg, "driver")
			if !ok {
				unsupported("-device (unreadable)")
				continue
			}
			d := Device{}
			for _, p := range o {
				switch p.Key {
				case "driver":
					d.Driver = p.Value
				case "id":
					d.ID = p.Value
				case "bus":
					d.Bus = p.Value
				case "addr":
					d.Addr = p.Value
				default:
					if d.Props == nil {
						d.Props = map[string]string{}
					}
					d.Props[p.Key] = p.Value
				}
			}
			if nd := d.Props["netdev"]; nd != "" {
				m.NICs = append(m.NICs, NIC{ID: cmp.Or(d.ID, nd), Netdev: nd, MAC: d.Props["mac"]})
			}
			useChardev(d.Props["chardev"])
			m.Devices = append(m.Devices, d)
		case "-drive":
			o, ok := parse(name, arg, "")
			if !ok {
				continue
			}
			iface, _ := o.Get("if")
			if iface == "" {
				iface = "ide"
			}
			if iface == "none" {
				continue // a -device attaches it: a Disk's node
			}
			d := Drive{If: iface}
			d.ID, _ = o.Get("id")
			for _, k := range []string{"index", "bus", "unit", "media"} {
				if v, ok := o.Get(k); ok {
					if d.Props == nil {
						d.Props = map[string]string{}
					}
					d.Props[k] = v
				}
			}
			if d.ID == "" {
				unsupported("-drive if=" + iface + " without id=")
				continue
			}
			m.Drives = append(m.Drives, d)
		case "-nic":
			netOptions = true
			o, ok := parse(name, arg, "type")
			if !ok {
				continue
			}
			if t, _ := o.Get("type"); t == "none" {
				continue
			}
			n := NIC{Nic: true}
			n.ID, _ = o.Get("id")
			n.Model, _ = o.Get("model")
			n.MAC, _ = o.Get("mac")
			m.NICs = append(m.NICs, n)
		case "-netdev":
			netOptions = true
		case "-net":
			netOptions = true
			if arg != "none" {
				unsupported("-net (legacy hub networking: give the source -nic or -netdev with -device)")
			}
		case "-serial":
			switch {
			case arg == "none":
				m.Serials = append(m.Serials, Serial{None: true})
			case strings.HasPrefix(arg, "chardev:"):
				id := strings.TrimPrefix(arg, "chardev:")
				useChardev(id)
				m.Serials = append(m.Serials, Serial{Chardev: id})
			default:
				m.Serials = append(m.Serials, Serial{})
			}
		case "-kernel", "-initrd", "-dtb":
			if m.Kernel == nil {
				m.Kernel = &Kernel{}
			}
			ref, err := fileRef(arg)
			if err != nil {
				return m, err
			}
			switch name {
			case "-kernel":
				m.Kernel.Kernel = ref
			case "-initrd":
				m.Kernel.Initrd = &ref
			default:
				m.Kernel.DTB = &ref
			}
		case "-append":
			if m.Kernel == nil {
				m.Kernel = &Kernel{}
			}
			m.Kernel.Append = arg
		case "-bios":
			ref, err := fileRef(arg)
			if err != nil {
				return m, err
			}
			m.Firmware = &ref
		case "-vga":
			m.VGA = arg
		case "-rtc", "-boot":
			o, ok := parse(name, arg, "")
			if !ok {
				continue
			}
			mp := map[string]string{}
			for _, p := range o {
				mp[p.Key] = p.Value
			}
			if name == "-rtc" {
				m.RTC = mp
			} else {
				m.Boot = mp
			}
		case "-uuid":
			m.UUID = arg
		case "-global":
			o, ok := parse(name, arg, "")
			if !ok {
				continue
			}
			for _, p := range o {
				drv, prop, ok := strings.Cut(p.Key, ".")
				if !ok {
					unsupported("-global " + p.Key)
					continue
				}
				m.Globals = append(m.Globals, Global{Driver: drv, Property: prop, Value: p.Value})
			}
		case "-usb":
			if m.Props == nil {
				m.Props = map[string]string{}
			}
			m.Props["usb"] = "on"
		default:
			if f := strings.TrimPrefix(name, "-"); slices.Contains(machineFlags, f) {
				m.Flags = append(m.Flags, f)
				continue
			}
			if !hostOnly[name] {
				unsupported(name)
			}
		}
	}
	m.Chardevs = chardevs
	m.DefaultNIC = !netOptions && !slices.Contains(m.Flags, "nodefaults")
	m.RAM.Backend = RAMPlain
	if id := m.RAM.BackendID; id != "" {
		o, ok := backends[id]
		if !ok {
			unsupported("-machine memory-backend " + id + " (not defined by an -object)")
		} else {
			typ, _ := o.Get("qom-type")
			on := func(k string) bool { v, _ := o.Get(k); return v == "on" || v == "true" || v == "yes" }
			switch {
			case on("hugetlb"):
				m.RAM.Backend = RAMHugePages
			case on("share"):
				m.RAM.Backend = RAMShared
			case typ == "memory-backend-memfd":
				m.RAM.Backend = RAMMemfd
			}
			if v, ok := o.Get("x-use-canonical-path-for-ramblock-id"); ok && (v == "off" || v == "false" || v == "no") {
				m.RAM.IDIsBlockName = true
			}
			delete(backends, id)
		}
	}
	for id := range backends {
		unsupported("-object memory-backend " + id + " (memory besides the machine's RAM)")
	}
	return m, nil
}

// parseObject reads an -object argument, dotted or JSON.
func parseObject(arg string) (qemuopt.Opts, bool) { return parseObjectLike(arg, "qom-type") }

// parseObjectLike reads an option that QEMU also takes as JSON
// (-device, -object): top-level strings, numbers and booleans.
func parseObjectLike(arg, implied string) (qemuopt.Opts, bool) {
	if !strings.HasPrefix(strings.TrimSpace(arg), "{") {
		o, err := qemuopt.Parse(arg, implied)
		return o, err == nil
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(arg), &raw); err != nil {
		return nil, false
	}
	var o qemuopt.Opts
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if v, ok := raw[implied].(string); ok {
		o = append(o, qemuopt.Pair{Key: implied, Value: v})
	}
	for _, k := range keys {
		if k == implied {
			continue
		}
		switch v := raw[k].(type) {
		case string:
			o = append(o, qemuopt.Pair{Key: k, Value: v})
		case bool:
			o = append(o, qemuopt.Pair{Key: k, Value: map[bool]string{true: "on", false: "off"}[v]})
		case float64:
			o = append(o, qemuopt.Pair{Key: k, Value: strconv.FormatFloat(v, 'f', -1, 64)})
		default:
			return nil, false
		}
	}
	return o, true
}

// fileRef describes a file the source loaded: base name, size, SHA-256.
// A file that is gone or unreadable since (a kernel upgrade replaced it)
// is described by its name alone: the guest runs from memory, and the
// receiver names its own copy anyway.
func fileRef(path string) (FileRef, error) {
	ref := FileRef{Name: filepath.Base(path)}
	f, err := os.Open(path)
	if err != nil {
		return ref, nil
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return ref, nil
	}
	ref.Size, ref.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	return ref, nil
}

// driveOf returns the drive (a node name or -drive id) that the device
// with id dev attaches, or dev itself when a -drive of that id attaches it
// by interface; "" when the description does not say.
func (m *Machine) driveOf(dev string) string {
	for _, d := range m.Devices {
		if d.ID == dev && d.Props["drive"] != "" {
			return d.Props["drive"]
		}
	}
	for _, d := range m.Drives {
		if d.ID == dev {
			return dev
		}
	}
	return ""
}
