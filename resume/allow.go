package resume

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ntc-project/ntc/capture"
)

// ErrRefused: the checkpoint's machine description asks for something
// outside what a receiver allows. Nothing was started.
var ErrRefused = errors.New("refused")

// kind is the syntax a value must have.
type kind int

const (
	kBool      kind = iota // on, off, true, false, yes, no
	kOnOffAuto             // a bool or auto
	kNum                   // decimal or 0x hex
	kU8                    // a kNum from 0 to 255
	kU16                   // a kNum from 0 to 65535
	kSize                  // a number with an optional k/M/G/T suffix
	kToken                 // letters, digits, '.', '_', '+', '-'
	kEmpty                 // only "" (romfile= turns a ROM off)
	kMAC
	kRefDrive   // a disk node or drive the description declares
	kRefNetdev  // a NIC backend the receiver creates
	kRefChardev // a character device the receiver creates
	kRefObject  // an -object the description declares (iothread, rng)
)

var (
	reNum   = regexp.MustCompile(`^(0x[0-9a-fA-F]{1,16}|[0-9]{1,20})$`)
	reSize  = regexp.MustCompile(`^[0-9]{1,20}[kKMGT]?$`)
	reToken = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
	reID    = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]{0,63}$`)
	reMAC   = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
	rePCI   = regexp.MustCompile(`^(0x)?([0-9a-fA-F]{1,2})(\.(0x)?[0-7])?$`)
	reBus   = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9_-]{1,64})*?)(\.[0-9]{1,3})?$`)
	reUUID  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	reHex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reDate  = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2})?$`)
)

var bools = []string{"on", "off", "true", "false", "yes", "no"}

// reserved is the prefix of the ids the receiver gives its own parts.
const reserved = "ntc"

func validID(s string) bool {
	return reID.MatchString(s) && !strings.HasPrefix(strings.ToLower(s), reserved)
}

// props maps property names to the syntax of their values.
type props map[string]kind

func merge(ps ...props) props {
	out := props{}
	for _, p := range ps {
		for k, v := range p {
			out[k] = v
		}
	}
	return out
}

// Properties allowed on every device, on PCI devices and on virtio ones.
var (
	anyDevice = props{"bootindex": kNum}
	pciDevice = props{"romfile": kEmpty, "rombar": kNum, "multifunction": kBool, "x-pcie-lnksta-dllla": kBool}
	virtio    = props{"disable-legacy": kOnOffAuto, "disable-modern": kBool, "vectors": kNum, "ioeventfd": kBool,
		"event_idx": kBool, "indirect_desc": kBool, "packed": kBool, "iommu_platform": kBool, "ats": kBool,
		"page-per-vq": kBool, "any_layout": kBool, "notify_on_empty": kBool}
	blockDevice = props{"drive": kRefDrive, "serial": kToken, "logical_block_size": kSize, "physical_block_size": kSize,
		"min_io_size": kSize, "opt_io_size": kSize, "discard_granularity": kSize, "write-cache": kOnOffAuto,
		"share-rw": kBool, "werror": kToken, "rerror": kToken, "cyls": kNum, "heads": kNum, "secs": kNum}
	netDevice = props{"netdev": kRefNetdev, "mac": kMAC}
	virtioNet = props{"mq": kBool, "csum": kBool, "guest_csum": kBool, "gso": kBool, "guest_tso4": kBool, "guest_tso6": kBool,
		"guest_ecn": kBool, "guest_ufo": kBool, "guest_announce": kBool, "host_tso4": kBool, "host_tso6": kBool, "host_ecn": kBool,
		"host_ufo": kBool, "mrg_rxbuf": kBool, "status": kBool, "ctrl_vq": kBool, "ctrl_rx": kBool, "ctrl_vlan": kBool,
		"ctrl_rx_extra": kBool, "ctrl_mac_addr": kBool, "ctrl_guest_offloads": kBool, "rx_queue_size": kNum,
		"tx_queue_size": kNum, "host_mtu": kNum, "speed": kNum, "duplex": kToken, "rss": kBool, "hash": kBool}
	virtioBlk = props{"num-queues": kNum, "queue-size": kNum, "iothread": kRefObject, "discard": kBool,
		"write-zeroes": kBool, "config-wce": kBool, "scsi": kBool, "seg-max-adjust": kBool, "max-discard-sectors": kNum,
		"max-write-zeroes-sectors": kNum}
	scsiDisk = props{"scsi-id": kNum, "lun": kNum, "channel": kNum, "rotation_rate": kNum, "wwn": kNum,
		"removable": kBool, "vendor": kToken, "product": kToken, "ver": kToken, "dpofua": kBool}
	ideDisk = props{"unit": kNum, "model": kToken, "wwn": kNum, "rotation_rate": kNum, "ver": kToken}
	display = props{"vgamem_mb": kNum, "xres": kNum, "yres": kNum, "edid": kBool, "max_outputs": kNum, "xmax": kNum, "ymax": kNum}
	usb     = props{"port": kToken, "usb_version": kNum}
	serial  = props{"chardev": kRefChardev}
)

// drivers is the device allowlist: the drivers a description may name
// and the properties each may set. Anything naming a host file, socket or
// program (a drive's file, a chardev's path, a romfile) is absent: the
// receiver creates those parts itself.
var drivers = map[string]props{
	"virtio-blk-pci":    merge(anyDevice, pciDevice, virtio, blockDevice, virtioBlk),
	"virtio-blk-device": merge(anyDevice, virtio, blockDevice, virtioBlk),
	"virtio-scsi-pci": merge(anyDevice, pciDevice, virtio, props{"num_queues": kNum, "iothread": kRefObject,
		"cmd_per_lun": kNum, "max_sectors": kNum, "virtqueue_size": kNum}),
	"scsi-hd":              merge(anyDevice, blockDevice, scsiDisk),
	"scsi-cd":              merge(anyDevice, blockDevice, scsiDisk),
	"ide-hd":               merge(anyDevice, blockDevice, ideDisk),
	"ide-cd":               merge(anyDevice, blockDevice, ideDisk),
	"ahci":                 merge(anyDevice, pciDevice),
	"ich9-ahci":            merge(anyDevice, pciDevice),
	"virtio-net-pci":       merge(anyDevice, pciDevice, virtio, netDevice, virtioNet),
	"virtio-net-device":    merge(anyDevice, virtio, netDevice, virtioNet),
	"e1000":                merge(anyDevice, pciDevice, netDevice),
	"e1000e":               merge(anyDevice, pciDevice, netDevice),
	"rtl8139":              merge(anyDevice, pciDevice, netDevice),
	"vmxnet3":              merge(anyDevice, pciDevice, netDevice),
	"ne2k_pci":             merge(anyDevice, pciDevice, netDevice),
	"pcnet":                merge(anyDevice, pciDevice, netDevice),
	"virtio-serial-pci":    merge(anyDevice, pciDevice, virtio, props{"max_ports": kNum}),
	"virtio-serial-device": merge(anyDevice, virtio, props{"max_ports": kNum}),
	"virtconsole":          merge(serial, props{"name": kToken, "nr": kNum}),
	"virtserialport":       merge(serial, props{"name": kToken, "nr": kNum}),
	"isa-serial":           merge(serial, props{"index": kNum, "iobase": kNum, "irq": kNum}),
	"pci-serial":           merge(anyDevice, pciDevice, serial),
	"vmgenid":              {"guid": kToken},
	"virtio-rng-pci":       merge(anyDevice, pciDevice, virtio, props{"rng": kRefObject, "max-bytes": kNum, "period": kNum}),
	"virtio-rng-device":    merge(virtio, props{"rng": kRefObject, "max-bytes": kNum, "period": kNum}),
	"virtio-balloon-pci":   merge(anyDevice, pciDevice, virtio, props{"deflate-on-oom": kBool, "free-page-reporting": kBool}),
	"VGA":                  merge(pciDevice, display),
	"cirrus-vga":           merge(pciDevice, display),
	"bochs-display":        merge(pciDevice, display),
	"virtio-vga":           merge(pciDevice, virtio, display),
	"virtio-gpu-pci":       merge(pciDevice, virtio, display),
	"qemu-xhci":            merge(pciDevice, props{"p2": kNum, "p3": kNum, "streams": kBool}),
	"nec-usb-xhci":         merge(pciDevice, props{"p2": kNum, "p3": kNum, "streams": kBool}),
	"usb-ehci":             merge(pciDevice),
	"ich9-usb-ehci1":       merge(pciDevice),
	"piix3-usb-uhci":       merge(pciDevice),
	"usb-tablet":           merge(anyDevice, usb),
	"usb-kbd":              merge(anyDevice, usb),
	"usb-mouse":            merge(anyDevice, usb),
	"virtio-keyboard-pci":  merge(pciDevice, virtio),
	"virtio-mouse-pci":     merge(pciDevice, virtio),
	"virtio-tablet-pci":    merge(pciDevice, virtio),
	"pcie-root-port":       merge(pciDevice, props{"chassis": kU8, "slot": kU16, "port": kU8, "bus-reserve": kNum, "hotplug": kBool}),
	"ioh3420":              merge(pciDevice, props{"chassis": kU8, "slot": kU16, "port": kU8, "hotplug": kBool}),
	"pci-bridge":           merge(pciDevice, props{"chassis_nr": kU8, "shpc": kBool, "msi": kOnOffAuto}),
	"pcie-pci-bridge":      merge(pciDevice),
	"i6300esb":             merge(pciDevice),
	"ib700":                {},
	"pvpanic":              {"ioport": kNum},
	"pvpanic-pci":          merge(pciDevice),
}

// nicModels are the drivers a -nic may name.
var nicModels = []string{"virtio-net-pci", "e1000", "e1000e", "rtl8139", "vmxnet3", "ne2k_pci", "pcnet", "virtio-net-device"}

// Machine properties, objects, and other options a description may set.
var (
	machineProps = props{"smm": kOnOffAuto, "vmport": kOnOffAuto, "hpet": kBool, "usb": kBool, "sata": kBool,
		"pit": kBool, "pic": kBool, "i8042": kBool, "acpi": kOnOffAuto, "graphics": kBool, "dump-guest-core": kBool,
		"mem-merge": kBool, "kernel-irqchip": kToken, "max-ram-below-4g": kSize, "suppress-vmdesc": kBool,
		"smbus": kBool, "default-bus-bypass-iommu": kBool, "gic-version": kToken, "virtualization": kBool,
		"secure": kBool, "highmem": kBool, "its": kBool, "iommu": kToken}
	objects = map[string]props{
		"iothread":    {"poll-max-ns": kNum, "poll-grow": kNum, "poll-shrink": kNum, "aio-max-batch": kNum},
		"rng-builtin": {},
	}
	// extraGlobals are the machine's own parts -global may tune, besides
	// the allowed drivers.
	extraGlobals = map[string]props{
		"PIIX4_PM": {"disable_s3": kNum, "disable_s4": kNum},
		"ICH9-LPC": {"disable_s3": kNum, "disable_s4": kNum},
		"kvm-pit":  {"lost_tick_policy": kToken},
		"isa-fdc":  {"fdtypeA": kToken, "fdtypeB": kToken},
	}
	rtcProps  = map[string][]string{"base": nil, "clock": {"host", "rt", "vm"}, "driftfix": {"none", "slew"}}
	bootProps = props{"order": kToken, "once": kToken, "menu": kBool, "strict": kBool, "reboot-timeout": kNum, "splash-time": kNum}
	vgaTypes  = []string{"std", "cirrus", "vmware", "virtio", "none"}
	accels    = []string{"tcg", "kvm"}
	arches    = []string{"x86_64", "i386", "aarch64", "arm", "riscv64", "riscv32", "ppc64", "ppc", "s390x", "mips64el", "loongarch64"}
	flags     = []string{"nodefaults", "no-reboot", "no-shutdown", "no-hpet", "no-acpi"}
	// builtinBuses are the buses machines have without a -device.
	builtinBuses = []string{"pci.0", "pcie.0", "ide.0", "ide.1", "ide.2", "ide.3", "ide.4", "ide.5", "isa.0", "usb-bus.0", "scsi.0", "virtio-mmio-bus.0"}
	// bridges are the drivers whose bus is named after the device's own
	// id ("bus=pci.1" of the root port "-device pcie-root-port,id=pci.1"),
	// not after the id and a number ("scsi0.0").
	bridges = []string{"pcie-root-port", "ioh3420", "pci-bridge", "pcie-pci-bridge"}
	// controllers are the drivers whose buses are named after the
	// device's id and a number ("scsi0.0", "usb.0", "vser0.0").
	controllers = []string{"virtio-scsi-pci", "virtio-serial-pci", "virtio-serial-device", "ahci", "ich9-ahci",
		"qemu-xhci", "nec-usb-xhci", "usb-ehci", "ich9-usb-ehci1", "piix3-usb-uhci"}
	// rootPorts are the bridges that plug into the root complex (pcie.0)
	// only, and take one device in slot 0.
	rootPorts = []string{"pcie-root-port", "ioh3420"}
)

// refs is what references in a description may name.
type refs struct {
	drives, netdevs, chardevs, objects map[string]bool
	// devices maps the ids of the devices checked so far to their
	// drivers: a device's bus must be one an earlier device provides
	// (QEMU makes the devices in order).
	devices map[string]string
}

// value checks v against k.
func (r *refs) value(k kind, v string) error {
	ok := false
	switch k {
	case kBool:
		ok = slices.Contains(bools, v)
	case kOnOffAuto:
		ok = v == "auto" || slices.Contains(bools, v)
	case kNum:
		ok = reNum.MatchString(v)
	case kU8, kU16:
		n, err := strconv.ParseUint(v, 0, 64)
		ok = reNum.MatchString(v) && err == nil && (n <= 0xff || k == kU16 && n <= 0xffff)
	case kSize:
		ok = reSize.MatchString(v)
	case kToken:
		ok = reToken.MatchString(v)
	case kEmpty:
		ok = v == ""
	case kMAC:
		ok = reMAC.MatchString(v)
	case kRefDrive:
		ok = r.drives[v]
		if !ok {
			return fmt.Errorf("drive %q is not a disk the checkpoint carries (read-only media and other images are not moved)", v)
		}
	case kRefNetdev:
		ok = r.netdevs[v]
	case kRefChardev:
		ok = r.chardevs[v]
	case kRefObject:
		ok = r.objects[v]
	}
	if !ok {
		return fmt.Errorf("value %q is not allowed there", v)
	}
	return nil
}

// checkProps checks a property map against an allowlist.
func (r *refs) checkProps(what string, ps map[string]string, allow props) error {
	for _, k := range sortedKeys(ps) {
		kd, ok := allow[k]
		if !ok {
			return fmt.Errorf("%s: property %q is not allowed: %w", what, k, ErrRefused)
		}
		if err := r.value(kd, ps[k]); err != nil {
			return fmt.Errorf("%s: property %s: %v: %w", what, k, err, ErrRefused)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func refuse(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrRefused)
}

// validate checks a checkpoint's machine description against the
// allowlist: every driver, property and value, and every reference (a
// drive, netdev, chardev, object or bus) names something the description
// declares or the receiver creates. The error names the refused item.
func validate(m *capture.Manifest) (*refs, error) {
	mc := &m.Machine
	if len(mc.Unsupported) > 0 {
		return nil, refuse("the source used %s, which ntc cannot recreate on a receiver", strings.Join(quoteAll(mc.Unsupported), ", "))
	}
	if !slices.Contains(arches, mc.Arch) {
		return nil, refuse("machine arch %q is not one ntc resumes", mc.Arch)
	}
	if !reToken.MatchString(mc.Type) {
		return nil, refuse("machine type %q", mc.Type)
	}
	if mc.Accel != "" && !slices.Contains(accels, mc.Accel) {
		return nil, refuse("accelerator %q", mc.Accel)
	}
	r := &refs{drives: map[string]bool{}, netdevs: map[string]bool{}, chardevs: map[string]bool{}, objects: map[string]bool{}, devices: map[string]string{}}
	ids := map[string]string{} // every id the description declares, and what it is
	declare := func(what, id string) error {
		if !validID(id) {
			return refuse("%s id %q (want a letter, then letters, digits, '.', '_', '-'; not starting with %q)", what, id, reserved)
		}
		if prev, ok := ids[id]; ok && prev != what {
			return refuse("%s id %q is also a %s", what, id, prev)
		}
		ids[id] = what
		return nil
	}
	for _, d := range m.Disks {
		if err := declare("disk node", d.Node); err != nil {
			return nil, err
		}
		if d.Device != "" && !reToken.MatchString(d.Device) {
			return nil, refuse("disk %s: device name %q", d.Name, d.Device)
		}
		r.drives[d.Node] = true
	}
	for _, d := range mc.Drives {
		if err := declare("drive", d.ID); err != nil && !r.drives[d.ID] {
			return nil, err
		}
		if !slices.Contains([]string{"ide", "scsi", "virtio", "floppy"}, d.If) {
			return nil, refuse("drive %s: interface %q", d.ID, d.If)
		}
		if err := r.checkProps("drive "+d.ID, d.Props, props{"index": kNum, "bus": kNum, "unit": kNum, "media": kToken}); err != nil {
			return nil, err
		}
		if media := d.Props["media"]; media != "" && media != "disk" && media != "cdrom" {
			return nil, refuse("drive %s: media %q", d.ID, media)
		}
		r.drives[d.ID] = true
	}
	for _, o := range mc.Objects {
		allow, ok := objects[o.Type]
		if !ok {
			return nil, refuse("-object %q is not allowed", o.Type)
		}
		if err := declare("object", o.ID); err != nil {
			return nil, err
		}
		if err := r.checkProps("object "+o.ID, o.Props, allow); err != nil {
			return nil, err
		}
		r.objects[o.ID] = true
	}
	for _, id := range mc.Chardevs {
		if err := declare("chardev", id); err != nil {
			return nil, err
		}
		r.chardevs[id] = true
	}
	for _, n := range mc.NICs {
		if n.MAC != "" && !reMAC.MatchString(n.MAC) {
			return nil, refuse("NIC %s: MAC %q", n.ID, n.MAC)
		}
		if n.Nic {
			if n.ID != "" {
				if err := declare("nic", n.ID); err != nil {
					return nil, err
				}
			}
			if n.Model != "" && !slices.Contains(nicModels, n.Model) {
				return nil, refuse("-nic model %q is not allowed", n.Model)
			}
			if n.Netdev != "" {
				return nil, refuse("-nic %s names a netdev", n.ID)
			}
			continue
		}
		if err := declare("netdev", n.Netdev); err != nil {
			return nil, err
		}
		if n.Model != "" {
			return nil, refuse("NIC %s: a model belongs to -nic only", n.ID)
		}
		r.netdevs[n.Netdev] = true
	}
	for _, d := range mc.Devices {
		if d.ID != "" {
			if err := declare("device", d.ID); err != nil {
				return nil, err
			}
		}
	}
	for i, d := range mc.Devices {
		what := fmt.Sprintf("device %d (%s", i, d.Driver)
		if d.ID != "" {
			what += " " + d.ID
		}
		what += ")"
		allow, ok := drivers[d.Driver]
		if !ok {
			return nil, refuse("%s: driver %q is not allowed", what, d.Driver)
		}
		if d.Addr != "" && !validPCIAddr(d.Addr) {
			return nil, refuse("%s: addr %q is not a PCI slot", what, d.Addr)
		}
		if err := r.bus(d); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if d.ID != "" {
			if _, dup := r.devices[d.ID]; dup {
				return nil, refuse("%s: a device id twice", what)
			}
			r.devices[d.ID] = d.Driver
		}
		if err := r.checkProps(what, d.Props, allow); err != nil {
			return nil, err
		}
		if nd := d.Props["netdev"]; nd != "" && !slices.ContainsFunc(mc.NICs, func(n capture.NIC) bool { return n.Netdev == nd && !n.Nic }) {
			return nil, refuse("%s: netdev %q has no NIC entry", what, nd)
		}
	}
	if err := r.checkProps("machine", mc.Props, machineProps); err != nil {
		return nil, err
	}
	if err := validateCPU(&mc.CPU); err != nil {
		return nil, err
	}
	if err := validateRAM(&mc.RAM); err != nil {
		return nil, err
	}
	if id := mc.RAM.BackendID; id != "" {
		if err := declare("memory backend", id); err != nil {
			return nil, err
		}
	}
	for _, s := range mc.Serials {
		if s.Chardev != "" && !r.chardevs[s.Chardev] {
			return nil, refuse("serial port on chardev %q, which the description does not declare", s.Chardev)
		}
	}
	for _, g := range mc.Globals {
		allow, ok := drivers[g.Driver]
		if !ok {
			allow, ok = extraGlobals[g.Driver]
		}
		if !ok {
			return nil, refuse("-global %s.%s: driver %q is not allowed", g.Driver, g.Property, g.Driver)
		}
		if err := r.checkProps("-global "+g.Driver, map[string]string{g.Property: g.Value}, allow); err != nil {
			return nil, err
		}
	}
	for _, k := range sortedKeys(mc.RTC) {
		allowed, ok := rtcProps[k]
		v := mc.RTC[k]
		if !ok || (allowed != nil && !slices.Contains(allowed, v)) || (k == "base" && v != "utc" && v != "localtime" && !reDate.MatchString(v)) {
			return nil, refuse("-rtc %s=%q", k, v)
		}
	}
	if err := r.checkProps("-boot", mc.Boot, bootProps); err != nil {
		return nil, err
	}
	if mc.VGA != "" && !slices.Contains(vgaTypes, mc.VGA) {
		return nil, refuse("-vga %q", mc.VGA)
	}
	if mc.UUID != "" && !reUUID.MatchString(mc.UUID) {
		return nil, refuse("-uuid %q", mc.UUID)
	}
	for _, f := range mc.Flags {
		if !slices.Contains(flags, f) {
			return nil, refuse("option -%s", f)
		}
	}
	if k := mc.Kernel; k != nil {
		if len(k.Append) > 4096 || strings.ContainsFunc(k.Append, func(c rune) bool { return c < 0x20 || c > 0x7e }) {
			return nil, refuse("kernel command line (%d bytes; printable ASCII up to 4096 bytes allowed)", len(k.Append))
		}
		for _, f := range []*capture.FileRef{&k.Kernel, k.Initrd} {
			if f != nil && !validFileRef(f) {
				return nil, refuse("kernel file %q", f.Name)
			}
		}
		if k.DTB != nil {
			return nil, refuse("a -dtb: ntc does not resume machines with a device tree file yet")
		}
	}
	if f := mc.Firmware; f != nil && !validFileRef(f) {
		return nil, refuse("firmware file %q", f.Name)
	}
	return r, nil
}

// bus checks the bus a device names: a built-in bus, or one a device
// declared before it provides: a bridge's bus is named after the bridge
// ("pci.1" of the root port pci.1), another device's after the device
// and a number ("scsi0.0" of the controller scsi0; a controller of the
// list above). A root port sits on
// pcie.0 only, and what sits on a root port in its slot 0.
func (r *refs) bus(d capture.Device) error {
	b := d.Bus
	if slices.Contains(rootPorts, d.Driver) && b != "" && b != "pcie.0" {
		return refuse("a %s on bus %q: root ports plug into pcie.0 only", d.Driver, b)
	}
	if b == "" || slices.Contains(builtinBuses, b) {
		return nil
	}
	if drv, ok := r.devices[b]; ok && slices.Contains(bridges, drv) {
		if slot, _, _ := strings.Cut(strings.TrimPrefix(d.Addr, "0x"), "."); slices.Contains(rootPorts, drv) && d.Addr != "" && strings.TrimLeft(slot, "0") != "" {
			return refuse("addr %q on the root port %s: a root port has slot 0 only", d.Addr, b)
		}
		return nil
	}
	m := reBus.FindStringSubmatch(b)
	if m != nil && m[3] != "" && slices.Contains(controllers, r.devices[m[1]]) {
		return nil
	}
	return refuse("bus %q is neither a machine's own nor one a device declared before it provides", b)
}

// validPCIAddr accepts a PCI slot and function as -device addr= takes
// them: "4", "0x1f", "0x1.2", "0x1.0x2", slot 0 to 31.
func validPCIAddr(a string) bool {
	m := rePCI.FindStringSubmatch(a)
	if m == nil {
		return false
	}
	slot, err := strconv.ParseUint(m[2], 16, 8)
	return err == nil && slot <= 31
}

func validFileRef(f *capture.FileRef) bool {
	return capture.CheckName(f.Name) == nil && (f.SHA256 == "" || reHex64.MatchString(f.SHA256)) && f.Size >= 0
}

func validateCPU(c *capture.CPU) error {
	if c.Count < 1 || c.Count > 1024 {
		return refuse("CPU count %d", c.Count)
	}
	for _, n := range []int{c.Sockets, c.Dies, c.Clusters, c.Cores, c.Threads, c.MaxCPUs} {
		if n < 0 || n > 1024 {
			return refuse("CPU topology number %d", n)
		}
	}
	if c.Model == "" && len(c.Features) > 0 {
		return refuse("CPU features without a CPU model")
	}
	if c.Model != "" && !reToken.MatchString(c.Model) {
		return refuse("CPU model %q", c.Model)
	}
	for _, f := range c.Features {
		if !reToken.MatchString(f.Name) || !(slices.Contains(bools, f.Value) || reNum.MatchString(f.Value) || reToken.MatchString(f.Value)) {
			return refuse("CPU feature %q=%q", f.Name, f.Value)
		}
	}
	return nil
}

func validateRAM(r *capture.MachineRAM) error {
	if r.Size <= 0 || r.Size > 16<<40 || r.Size%4096 != 0 {
		return refuse("RAM size %d", r.Size)
	}
	if !slices.Contains([]string{capture.RAMPlain, capture.RAMMemfd, capture.RAMShared, capture.RAMHugePages}, r.Backend) {
		return refuse("RAM backend %q", r.Backend)
	}
	return nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
