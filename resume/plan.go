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
// directory, the received images (by descriptor), its own kernel.
func plan(m *capture.Manifest, h host) (*Plan, error) {
	if _, err := validate(m); err != nil {
		return nil, err
	}
	mc := &m.Machine
	work := h.work
	p := &Plan{
		QMP: filepath.Join(work, qmpName), Control: filepath.Join(work, controlName),
		Log: filepath.Join(work, logName), PIDFile: filepath.Join(work, pidName), Sandbox: h.sandbox,
	}
	if len(p.Control) > 107 {
		return nil, fmt.Errorf("work directory %s: the QMP socket path %s is longer than a unix socket allows (107 bytes): give a shorter --workdir", work, p.Control)
	}
	argv := []string{h.qemu}
	add := func(a ...string) { argv = append(argv, a...) }
	opt := func(name, implied string, o qemuopt.Opts) {
		s, err := o.Encode(implied)
		if err != nil {
			panic(fmt.Sprintf("resume: a validated option does not encode: %v", err)) // validate lets only encodable keys through
		}
		add(name, s)
	}
	kv := func(pairs ...string) qemuopt.Opts {
		var o qemuopt.Opts
		for i := 0; i+1 < len(pairs); i += 2 {
			o = append(o, qemuopt.Pair{Key: pairs[i], Value: pairs[i+1]})
		}
		return o
	}
	withProps := func(o qemuopt.Opts, ps map[string]string) qemuopt.Opts {
		for _, k := range sortedKeys(ps) {
			o = append(o, qemuopt.Pair{Key: k, Value: ps[k]})
		}
		return o
	}

	// The machine, CPUs and RAM.
	mo := kv("type", mc.Type)
	if mc.Accel != "" {
		mo = append(mo, qemuopt.Pair{Key: "accel", Value: mc.Accel})
	}
	mo = withProps(mo, mc.Props)
	if mc.RAM.BackendID != "" {
		mo = append(mo, qemuopt.Pair{Key: "memory-backend", Value: mc.RAM.BackendID})
	}
	opt("-machine", "type", mo)
	if c := mc.CPU; c.Model != "" {
		co := kv("model", c.Model)
		for _, f := range c.Features {
			co = append(co, qemuopt.Pair{Key: f.Name, Value: f.Value})
		}
		opt("-cpu", "model", co)
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
	opt("-smp", "cpus", so)
	size := strconv.FormatInt(mc.RAM.Size, 10) + "B"
	if mc.RAM.Size%(1<<20) == 0 {
		size = strconv.FormatInt(mc.RAM.Size>>20, 10) + "M"
	}
	add("-m", size)
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
		opt("-object", "qom-type", bo)
	}
	for _, f := range mc.Flags {
		add("-" + f)
	}
	add("-display", "none")
	if h.sandbox {
		add("-sandbox", sandboxOpts)
	}

	// Kernel and firmware: the receiver's own files.
	if k := mc.Kernel; k != nil {
		if h.kernel == "" {
			return nil, fmt.Errorf("the checkpoint's guest booted a kernel directly (%s%s): give this machine's copy with --kernel PATH%s (or resume.kernel in the configuration)",
				k.Kernel.Name, initrdNote(k), initrdFlag(k))
		}
		if k.Initrd != nil && h.initrd == "" {
			return nil, fmt.Errorf("the checkpoint's guest booted with an initrd (%s): give this machine's copy with --initrd PATH (or resume.initrd in the configuration)", k.Initrd.Name)
		}
		add("-kernel", h.kernel)
		p.note(h, "--kernel", h.kernel, &k.Kernel)
		if k.Initrd != nil {
			add("-initrd", h.initrd)
			p.note(h, "--initrd", h.initrd, k.Initrd)
		}
		if k.Append != "" {
			add("-append", k.Append)
		}
	} else if h.kernel != "" || h.initrd != "" {
		p.Notes = append(p.Notes, "the source booted from its disk: --kernel and --initrd are not used")
	}
	if f := mc.Firmware; f != nil {
		if h.firmware == "" {
			return nil, fmt.Errorf("the checkpoint's guest runs firmware %s of its own (-bios): give this machine's copy with --bios PATH (or resume.bios in the configuration)", f.Name)
		}
		add("-bios", h.firmware)
		p.note(h, "--bios", h.firmware, f)
	}
	for _, o := range mc.Objects {
		opt("-object", "qom-type", withProps(kv("qom-type", o.Type, "id", o.ID), o.Props))
	}

	// Disks: the received image, read-only through the descriptor ntc
	// passes, under a new overlay in the work directory.
	drives := map[string]capture.Drive{}
	for _, d := range mc.Drives {
		drives[d.ID] = d
	}
	for i, d := range m.Disks {
		dp := DiskPlan{Name: d.Name, Device: d.Device, Node: d.Node, Size: d.Size,
			Image: filepath.Join(h.images, strings.TrimSuffix(d.Index, ".idx")), Overlay: filepath.Join(work, d.Name+overlaySfx)}
		p.Disks = append(p.Disks, dp)
		set := strconv.Itoa(i + 1)
		base := fmt.Sprintf("%s-base%d", reserved, i)
		add("-add-fd", fmt.Sprintf("fd=%d,set=%s,opaque=%s", firstDiskFD+i, set, d.Name))
		opt("-blockdev", "", kv("driver", "raw", "node-name", base, "read-only", "on",
			"file.driver", "file", "file.filename", "/dev/fdset/"+set))
		top := kv("driver", "qcow2", "backing", base, "file.driver", "file", "file.filename", dp.Overlay)
		if dr, ok := drives[d.Node]; ok {
			opt("-drive", "", withProps(append(kv("if", dr.If, "id", d.Node), top...), dr.Props))
			delete(drives, d.Node)
			continue
		}
		opt("-blockdev", "", append(kv("node-name", d.Node), top...))
	}
	for _, d := range mc.Drives { // removable drives without a disk: empty
		if _, ok := drives[d.ID]; ok {
			opt("-drive", "", withProps(kv("if", d.If, "id", d.ID), d.Props))
		}
	}

	// Network: the receiver's own user-mode backends, reaching nothing
	// while the network is off.
	netOpts := func(o qemuopt.Opts) qemuopt.Opts {
		if h.network == NetworkOff {
			o = append(o, qemuopt.Pair{Key: "restrict", Value: "on"})
		}
		return o
	}
	nics := 0
	for _, n := range mc.NICs {
		if !n.Nic {
			opt("-netdev", "type", netOpts(kv("type", "user", "id", n.Netdev)))
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
		opt("-nic", "type", netOpts(o))
		p.NICs = append(p.NICs, id)
	}
	if mc.DefaultNIC && h.network == NetworkOff {
		// QEMU's default NIC on a hub, made explicit so that it reaches
		// nothing and its link can be set down.
		name := reserved + "-nic0"
		add("-net", "nic,name="+name, "-net", "user,restrict=on")
		p.NICs = append(p.NICs, name)
	}

	// Character devices: files and sockets in the work directory.
	serialOf := map[string]int{}
	for i, s := range mc.Serials {
		if s.Chardev != "" {
			if _, ok := serialOf[s.Chardev]; !ok {
				serialOf[s.Chardev] = i
			}
		}
	}
	sockets := map[string]bool{}
	for _, d := range mc.Devices {
		if d.Driver == "virtserialport" {
			sockets[d.Props["chardev"]] = true
		}
	}
	serialPath := func(i int) string {
		if i == 0 {
			p.SerialLog = filepath.Join(work, serialName)
			return p.SerialLog
		}
		return filepath.Join(work, fmt.Sprintf("serial-%d.log", i))
	}
	for _, id := range mc.Chardevs {
		switch i, isSerial := serialOf[id]; {
		case isSerial:
			opt("-chardev", "backend", kv("backend", "file", "id", id, "path", serialPath(i)))
		case sockets[id]:
			sock := filepath.Join(work, "chardev-"+id+".sock")
			if len(sock) > 107 {
				return nil, fmt.Errorf("work directory %s: the socket of chardev %s would be longer than a unix socket allows: give a shorter --workdir", work, id)
			}
			p.Consoles = append(p.Consoles, sock)
			opt("-chardev", "backend", kv("backend", "socket", "id", id, "path", sock, "server", "on", "wait", "off"))
		default:
			f := filepath.Join(work, "chardev-"+id+".log")
			p.Consoles = append(p.Consoles, f)
			opt("-chardev", "backend", kv("backend", "file", "id", id, "path", f))
		}
	}
	serials := mc.Serials
	if len(serials) == 0 && !slices.Contains(mc.Flags, "nodefaults") {
		serials = []capture.Serial{{}} // QEMU's default serial port, into the log
	}
	for i, s := range serials {
		switch {
		case s.None:
			add("-serial", "none")
		case s.Chardev != "":
			add("-serial", "chardev:"+s.Chardev)
		default:
			id := fmt.Sprintf("%s-serial%d", reserved, i)
			opt("-chardev", "backend", kv("backend", "file", "id", id, "path", serialPath(i)))
			add("-serial", "chardev:"+id)
		}
	}

	// Devices, in the source's order (PCI slots not given are assigned in
	// order).
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
		opt("-device", "driver", withProps(o, ps))
	}
	for _, g := range mc.Globals {
		add("-global", g.Driver+"."+g.Property+"="+qemuopt.Escape(g.Value))
	}
	if mc.VGA != "" {
		add("-vga", mc.VGA)
	}
	if len(mc.RTC) > 0 {
		opt("-rtc", "", withProps(nil, mc.RTC))
	}
	if len(mc.Boot) > 0 {
		opt("-boot", "", withProps(nil, mc.Boot))
	}
	if mc.UUID != "" {
		add("-uuid", mc.UUID)
	}

	// ntc's own parts.
	add("-qmp", "unix:"+qemuopt.Escape(p.QMP)+",server=on,wait=off",
		"-qmp", "unix:"+qemuopt.Escape(p.Control)+",server=on,wait=off",
		"-pidfile", p.PIDFile, "-S", "-incoming", "defer")
	p.Argv = argv
	return p, nil
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

func initrdNote(k *capture.Kernel) string {
	if k.Initrd == nil {
		return ""
	}
	return " with initrd " + k.Initrd.Name
}

func initrdFlag(k *capture.Kernel) string {
	if k.Initrd == nil {
		return ""
	}
	return " and --initrd PATH"
}
