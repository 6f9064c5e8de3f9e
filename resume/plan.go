package resume

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ntc-project/ntc/capture"
	qemuopt "github.com/ntc-project/ntc/qemu/opt"
)

// Files of a resume in its work directory.
const (
	qmpName     = "qmp.sock"     // the user's QMP socket
	controlName = "ntc-qmp.sock" // ntc's own QMP socket
	serialName  = "serial.log"   // the first serial port
	logName     = "qemu.log"     // QEMU's standard output and error
	pidName     = "qemu.pid"
	overlaySfx  = ".qcow2" // a disk's overlay: Disk.Name + overlaySfx
)

// firstDiskFD is the file descriptor QEMU gets the first received disk
// image on (os/exec's ExtraFiles start at 3); -add-fd names it.
const firstDiskFD = 3

// Plan is how a checkpoint's machine is started here: the command line
// ntc built from the description, and the files that go with it.
type Plan struct {
	Argv []string
	// Disks are the overlays the guest writes to, one per checkpointed
	// disk, in the order QEMU gets their images (fd 3, 4, …).
	Disks []DiskPlan
	// QMP is the user's QMP socket; Control is ntc's own (QEMU serves one
	// client per socket).
	QMP, Control string
	// SerialLog is the file the first serial port writes to ("" if the
	// machine has none).
	SerialLog string
	// Consoles are the files and sockets of the other character devices.
	Consoles []string
	// Log gets QEMU's standard output and error.
	Log     string
	PIDFile string
	// NICs are the net clients whose link is set down after the migration
	// unless the network stays on.
	NICs []string
	// GenID is set when the source has a vmgenid device and the copy got a
	// new generation ID (the guest can tell it is a copy).
	GenID bool
	// Sandbox: QEMU runs under its seccomp sandbox (-sandbox on,…).
	Sandbox bool
	// Notes say what the user may want to know (a kernel that differs
	// from the source's).
	Notes []string
}

// DiskPlan is one disk of the copy: a new qcow2 overlay on the received
// image, which QEMU only reads (ntc opens it and passes the descriptor).
type DiskPlan struct {
	Name    string `json:"name"`   // "disk-vda"
	Device  string `json:"device"` // "vda"
	Image   string `json:"image"`  // the received raw image, the overlay's backing file
	Overlay string `json:"overlay"`
	Size    int64  `json:"size"`
	// Node is the node name the description's devices use.
	Node string `json:"-"`
}

// host is what the receiver brings to a plan: its own paths and choices.
type host struct {
	images, work string // absolute
	network      Network
	qemu         string
	// kernel, initrd, firmware: the receiver's own files ("" none).
	kernel, initrd, firmware string
	// digest returns a local file's SHA-256 (hex), to compare with the
	// source's; nil: not compared.
	digest func(path string) (string, error)
	// hugePages: the receiver has the RAM's size of huge pages free.
	hugePages bool
	sandbox   bool
}

// sandboxOpts is QEMU's seccomp sandbox: no obsolete system calls, no
// privilege changes, no new processes, no resource control.
const sandboxOpts = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// plan checks m's machine description (validate) and builds the command
// line of a copy in h.work. Every path in it is the receiver's: the work
// directory, the received images (by descriptor), its own kernel. The
// phases below add to the command line in QEMU's order: the machine, what
// it boots, its disks, network and character devices, its devices, and
// ntc's own sockets.
func plan(m *capture.Manifest, h host) (*Plan, error) {
	if _, err := validate(m); err != nil {
		return nil, err
	}
	mc := &m.Machine
	p, err := newPlan(h)
	if err != nil {
		return nil, err
	}
	c := &cmdline{argv: []string{h.qemu}}
	c.machine(mc, h)
	if err := p.boot(c, mc, h); err != nil {
		return nil, err
	}
	for _, o := range mc.Objects {
		c.opt("-object", "qom-type", withProps(kv("qom-type", o.Type, "id", o.ID), o.Props))
	}
	p.disks(c, m, h.images)
	p.network(c, mc, h.network)
	if err := p.chardevs(c, mc); err != nil {
		return nil, err
	}
	p.devices(c, mc)
	c.add("-qmp", "unix:"+qemuopt.Escape(p.QMP)+",server=on,wait=off",
		"-qmp", "unix:"+qemuopt.Escape(p.Control)+",server=on,wait=off",
		"-pidfile", p.PIDFile, "-S", "-incoming", "defer")
	p.Argv = c.argv
	return p, nil
}

// maxSocketPath is the longest path a unix socket may have.
const maxSocketPath = 107

// newPlan is a plan with ntc's files in h.work.
func newPlan(h host) (*Plan, error) {
	work := h.work
	p := &Plan{
		QMP: filepath.Join(work, qmpName), Control: filepath.Join(work, controlName),
		Log: filepath.Join(work, logName), PIDFile: filepath.Join(work, pidName), Sandbox: h.sandbox,
	}
	if len(p.Control) > maxSocketPath {
		return nil, fmt.Errorf("work directory %s: the QMP socket path %s is longer than a unix socket allows (%d bytes): %w", work, p.Control, maxSocketPath, ErrWorkDirTooLong)
	}
	return p, nil
}

// cmdline is a QEMU command line being built.
type cmdline struct{ argv []string }

func (c *cmdline) add(a ...string) { c.argv = append(c.argv, a...) }

// opt adds option name with o as its value (implied: the key QEMU allows
// to be left out in front).
func (c *cmdline) opt(name, implied string, o qemuopt.Opts) {
	s, err := o.Encode(implied)
	if err != nil {
		panic(fmt.Sprintf("resume: a validated option does not encode: %v", err)) // validate lets only encodable keys through
	}
	c.add(name, s)
}

// kv makes options of key, value pairs.
func kv(pairs ...string) qemuopt.Opts {
	var o qemuopt.Opts
	for i := 0; i+1 < len(pairs); i += 2 {
		o = append(o, qemuopt.Pair{Key: pairs[i], Value: pairs[i+1]})
	}
	return o
}

// withProps appends ps to o, by key.
func withProps(o qemuopt.Opts, ps map[string]string) qemuopt.Opts {
	for _, k := range sortedKeys(ps) {
		o = append(o, qemuopt.Pair{Key: k, Value: ps[k]})
	}
	return o
}

// machine adds the machine, its CPUs and RAM (on the receiver's choice of
// backend), the source's flags, no display, and the sandbox.
func (c *cmdline) machine(mc *capture.Machine, h host) {
	mo := kv("type", mc.Type)
	// TCG maps its code buffer writable and executable at once unless it is
	// split: a service hardened with MemoryDenyWriteExecute
	// (configs/ntc-serve.service, which resumes hand-offs) refuses that
	// mapping ("mprotect of jit buffer"), so the copy's TCG runs split. ""
	// is QEMU's default accelerator, TCG.
	tcg := mc.Accel == "" || mc.Accel == "tcg"
	if !tcg {
		mo = append(mo, qemuopt.Pair{Key: "accel", Value: mc.Accel})
	}
	mo = withProps(mo, mc.Props)
	if mc.RAM.BackendID != "" {
		mo = append(mo, qemuopt.Pair{Key: "memory-backend", Value: mc.RAM.BackendID})
	}
	c.opt("-machine", "type", mo)
	if tcg {
		c.opt("-accel", "accel", kv("accel", "tcg", "split-wx", "on"))
	}
	if cpu := mc.CPU; cpu.Model != "" {
		co := kv("model", cpu.Model)
		for _, f := range cpu.Features {
			co = append(co, qemuopt.Pair{Key: f.Name, Value: f.Value})
		}
		c.opt("-cpu", "model", co)
	}
	so := kv("cpus", strconv.Itoa(mc.CPU.Count))
	for _, t := range []struct {
		k string
		n int
	}{{"sockets", mc.CPU.Sockets}, {"dies", mc.CPU.Dies}, {"clusters", mc.CPU.Clusters}, {"cores", mc.CPU.Cores}, {"threads", mc.CPU.Threads}, {"maxcpus", mc.CPU.MaxCPUs}} {
		if t.n > 0 {
			so = append(so, qemuopt.Pair{Key: t.k, Value: strconv.Itoa(t.n)})
		}
	}
	c.opt("-smp", "cpus", so)
	size := strconv.FormatInt(mc.RAM.Size, 10) + "B"
	if mc.RAM.Size%(1<<20) == 0 {
		size = strconv.FormatInt(mc.RAM.Size>>20, 10) + "M"
	}
	c.add("-m", size)
	if id := mc.RAM.BackendID; id != "" {
		// The backend is the receiver's choice; its id names the RAM block.
		bo := kv("qom-type", "memory-backend-memfd", "id", id, "size", strconv.FormatInt(mc.RAM.Size, 10))
		if mc.RAM.Backend == capture.RAMShared || mc.RAM.Backend == capture.RAMHugePages {
			bo = append(bo, qemuopt.Pair{Key: "share", Value: "on"})
		}
		if h.hugePages {
			bo = append(bo, kv("hugetlb", "on", "hugetlbsize", "2M", "prealloc", "on")...)
		}
		if mc.RAM.IDIsBlockName {
			bo = append(bo, qemuopt.Pair{Key: "x-use-canonical-path-for-ramblock-id", Value: "off"})
		}
		c.opt("-object", "qom-type", bo)
	}
	for _, f := range mc.Flags {
		c.add("-" + f)
	}
	c.add("-display", "none")
	if h.sandbox {
		c.add("-sandbox", sandboxOpts)
	}
}

// boot adds the kernel and firmware the source loaded: the receiver's own
// files, which it must have given.
func (p *Plan) boot(c *cmdline, mc *capture.Machine, h host) error {
	if k := mc.Kernel; k != nil {
		if h.kernel == "" && k.Initrd != nil && h.initrd == "" {
			return fmt.Errorf("the checkpoint's guest booted kernel %s with initrd %s directly: %w; %w", k.Kernel.Name, k.Initrd.Name, ErrNeedKernel, ErrNeedInitrd)
		}
		if h.kernel == "" {
			return fmt.Errorf("the checkpoint's guest booted kernel %s directly: %w", k.Kernel.Name, ErrNeedKernel)
		}
		if k.Initrd != nil && h.initrd == "" {
			return fmt.Errorf("the checkpoint's guest booted with initrd %s: %w", k.Initrd.Name, ErrNeedInitrd)
		}
		c.add("-kernel", h.kernel)
		p.note(h, "--kernel", h.kernel, &k.Kernel)
		if k.Initrd != nil {
			c.add("-initrd", h.initrd)
			p.note(h, "--initrd", h.initrd, k.Initrd)
		}
		if k.Append != "" {
			c.add("-append", k.Append)
		}
	} else if h.kernel != "" || h.initrd != "" {
		p.Notes = append(p.Notes, "the source booted from its disk: --kernel and --initrd are not used")
	}
	if f := mc.Firmware; f != nil {
		if h.firmware == "" {
			return fmt.Errorf("the checkpoint's guest runs firmware %s of its own (-bios): %w", f.Name, ErrNeedFirmware)
		}
		c.add("-bios", h.firmware)
		p.note(h, "--bios", h.firmware, f)
	}
	return nil
}

// disks adds each received disk: its image (in images), read-only through
// the descriptor ntc passes, under a new overlay in the work directory; a
// disk the source attached with -drive keeps its interface. Removable
// drives without a disk stay empty.
func (p *Plan) disks(c *cmdline, m *capture.Manifest, images string) {
	work := p.dir()
	drives := map[string]capture.Drive{}
	for _, d := range m.Machine.Drives {
		drives[d.ID] = d
	}
	for i, d := range m.Disks {
		dp := DiskPlan{Name: d.Name, Device: d.Device, Node: d.Node, Size: d.Size,
			Image: filepath.Join(images, strings.TrimSuffix(d.Index, ".idx")), Overlay: filepath.Join(work, d.Name+overlaySfx)}
		p.Disks = append(p.Disks, dp)
		set := strconv.Itoa(i + 1)
		base := fmt.Sprintf("%s-base%d", reserved, i)
		c.add("-add-fd", fmt.Sprintf("fd=%d,set=%s,opaque=%s", firstDiskFD+i, set, d.Name))
		c.opt("-blockdev", "", kv("driver", "raw", "node-name", base, "read-only", "on",
			"file.driver", "file", "file.filename", "/dev/fdset/"+set))
		top := kv("driver", "qcow2", "backing", base, "file.driver", "file", "file.filename", dp.Overlay)
		if dr, ok := drives[d.Node]; ok {
			c.opt("-drive", "", withProps(append(kv("if", dr.If, "id", d.Node), top...), dr.Props))
			delete(drives, d.Node)
			continue
		}
		c.opt("-blockdev", "", append(kv("node-name", d.Node), top...))
	}
	for _, d := range m.Machine.Drives {
		if _, ok := drives[d.ID]; ok {
			c.opt("-drive", "", withProps(kv("if", d.If, "id", d.ID), d.Props))
		}
	}
}

// network adds the receiver's own user-mode backends for the source's
// NICs, reaching nothing while the network is off, and records the net
// clients whose link Start sets down.
func (p *Plan) network(c *cmdline, mc *capture.Machine, network Network) {
	netOpts := func(o qemuopt.Opts) qemuopt.Opts {
		if network == NetworkOff {
			o = append(o, qemuopt.Pair{Key: "restrict", Value: "on"})
		}
		return o
	}
	nics := 0
	for _, n := range mc.NICs {
		if !n.Nic {
			c.opt("-netdev", "type", netOpts(kv("type", "user", "id", n.Netdev)))
			p.NICs = append(p.NICs, cmp.Or(n.ID, n.Netdev))
			continue
		}
		nics++
		id := cmp.Or(n.ID, fmt.Sprintf("%s-nic%d", reserved, nics))
		o := kv("type", "user", "id", id)
		if n.Model != "" {
			o = append(o, qemuopt.Pair{Key: "model", Value: n.Model})
		}
		if n.MAC != "" {
			o = append(o, qemuopt.Pair{Key: "mac", Value: n.MAC})
		}
		c.opt("-nic", "type", netOpts(o))
		p.NICs = append(p.NICs, id)
	}
	if mc.DefaultNIC && network == NetworkOff {
		// QEMU's default NIC on a hub, made explicit so that it reaches
		// nothing and its link can be set down.
		name := reserved + "-nic0"
		c.add("-net", "nic,name="+name, "-net", "user,restrict=on")
		p.NICs = append(p.NICs, name)
	}
}

// chardevs adds the character devices, as files and sockets in the work
// directory, and the serial ports. Each file is named after its chardev's
// id (chardevFile), except the console's: the chardev of the first serial
// port (the first -serial with a chardev, else the first isa-serial
// device) writes to serial.log (Plan.SerialLog). A virtio serial port's
// chardev is a socket. QEMU's default serial port (no -nodefaults, no
// -serial) and a -serial the source gave without a chardev get chardevs
// of ntc's.
func (p *Plan) chardevs(c *cmdline, mc *capture.Machine) error {
	serials := mc.Serials
	if len(serials) == 0 && !slices.Contains(mc.Flags, "nodefaults") {
		serials = []capture.Serial{{}} // QEMU's default serial port
	}
	ports := make([]string, len(serials)) // the chardev of each -serial ("" for none)
	for i, s := range serials {
		switch {
		case s.None:
		case s.Chardev != "":
			ports[i] = s.Chardev
		default:
			ports[i] = fmt.Sprintf("%s-serial%d", reserved, i)
		}
	}
	console := ""
	if i := slices.IndexFunc(ports, func(id string) bool { return id != "" }); i >= 0 {
		console = ports[i]
	} else if i := slices.IndexFunc(mc.Devices, func(d capture.Device) bool { return d.Driver == "isa-serial" }); i >= 0 {
		console = mc.Devices[i].Props["chardev"]
	}
	sockets := map[string]bool{}
	for _, d := range mc.Devices {
		if d.Driver == "virtserialport" {
			sockets[d.Props["chardev"]] = true
		}
	}
	file := func(id string) (string, error) {
		if id == console {
			p.SerialLog = filepath.Join(p.dir(), serialName)
			return p.SerialLog, nil
		}
		f, err := p.chardevFile(id, ".log")
		p.Consoles = append(p.Consoles, f)
		return f, err
	}
	for _, id := range mc.Chardevs {
		if sockets[id] && id != console {
			sock, err := p.chardevFile(id, ".sock")
			if err != nil {
				return err
			}
			p.Consoles = append(p.Consoles, sock)
			c.opt("-chardev", "backend", kv("backend", "socket", "id", id, "path", sock, "server", "on", "wait", "off"))
			continue
		}
		f, err := file(id)
		if err != nil {
			return err
		}
		c.opt("-chardev", "backend", kv("backend", "file", "id", id, "path", f))
	}
	for i, s := range serials {
		switch {
		case s.None:
			c.add("-serial", "none")
		case s.Chardev != "":
			c.add("-serial", "chardev:"+s.Chardev)
		default:
			f, err := file(ports[i])
			if err != nil {
				return err
			}
			c.opt("-chardev", "backend", kv("backend", "file", "id", ports[i], "path", f))
			c.add("-serial", "chardev:"+ports[i])
		}
	}
	return nil
}

// chardevFile is the file of chardev id in the work directory:
// "chardev-" + id + ext. The id is a QEMU id (validate allows only those,
// and ntc's own are too: a letter, then letters, digits, '.', '_', '-'),
// so the name stays in the directory; a socket's path must also fit a
// unix socket address.
func (p *Plan) chardevFile(id, ext string) (string, error) {
	if !reID.MatchString(id) {
		return "", fmt.Errorf("chardev id %q cannot name a file: %w", id, ErrRefused)
	}
	f := filepath.Join(p.dir(), "chardev-"+id+ext)
	if ext == ".sock" && len(f) > maxSocketPath {
		return "", fmt.Errorf("work directory %s: the socket of chardev %s would be longer than a unix socket allows: %w", p.dir(), id, ErrWorkDirTooLong)
	}
	return f, nil
}

// devices adds the devices in the source's order (PCI slots not given are
// assigned in order; a vmgenid device gets a new generation ID), then
// -global, -vga, -rtc, -boot and -uuid.
func (p *Plan) devices(c *cmdline, mc *capture.Machine) {
	for _, d := range mc.Devices {
		o := kv("driver", d.Driver)
		if d.ID != "" {
			o = append(o, qemuopt.Pair{Key: "id", Value: d.ID})
		}
		if d.Bus != "" {
			o = append(o, qemuopt.Pair{Key: "bus", Value: d.Bus})
		}
		if d.Addr != "" {
			o = append(o, qemuopt.Pair{Key: "addr", Value: d.Addr})
		}
		ps := d.Props
		if d.Driver == "vmgenid" {
			ps = map[string]string{"guid": "auto"}
			p.GenID = true
		}
		c.opt("-device", "driver", withProps(o, ps))
	}
	for _, g := range mc.Globals {
		c.add("-global", g.Driver+"."+g.Property+"="+qemuopt.Escape(g.Value))
	}
	if mc.VGA != "" {
		c.add("-vga", mc.VGA)
	}
	if len(mc.RTC) > 0 {
		c.opt("-rtc", "", withProps(nil, mc.RTC))
	}
	if len(mc.Boot) > 0 {
		c.opt("-boot", "", withProps(nil, mc.Boot))
	}
	if mc.UUID != "" {
		c.add("-uuid", mc.UUID)
	}
}

// note records that a local file differs from the one the source loaded.
func (p *Plan) note(h host, flag, path string, src *capture.FileRef) {
	if h.digest == nil || src.SHA256 == "" {
		return
	}
	sum, err := h.digest(path)
	if err != nil || sum == src.SHA256 {
		return
	}
	p.Notes = append(p.Notes, fmt.Sprintf("%s %s is not the file the source loaded (%s, sha256 %.12s…): the running guest does not notice; it boots this one if it reboots",
		flag, path, src.Name, src.SHA256))
}
