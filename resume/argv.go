package resume

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ntc-project/ntc/capture"
)

// Files of a resume in its work directory.
const (
	qmpName     = "qmp.sock"     // the user's QMP socket (the source's first -qmp)
	controlName = "ntc-qmp.sock" // ntc's own QMP socket
	serialName  = "serial.log"   // the serial console, when the source sent it to stdio or a file
	logName     = "qemu.log"     // QEMU's standard output and error
	pidName     = "qemu.pid"
	overlaySfx  = ".qcow2" // a disk's overlay: Disk.Name + overlaySfx
)

// Plan is how a checkpoint's machine is started again here: the source's
// command line with its paths moved into the work directory, and the files
// that go with it.
type Plan struct {
	Argv []string
	// Disks are the overlays the guest writes to, one per checkpointed disk.
	Disks []DiskPlan
	// QMP is the user's QMP socket; Control is ntc's own (QEMU serves one
	// client per socket).
	QMP, Control string
	// SerialLog is the file the first serial port writes to, "" when the
	// source sent it somewhere ntc does not move (a pty, a TCP socket).
	SerialLog string
	// Log gets QEMU's standard output and error.
	Log     string
	PIDFile string
	// NICs are the net clients (NIC ids, else their netdevs) whose link is
	// set down after the migration unless the network stays on.
	NICs []string
	// GenID is set when the source has a vmgenid device and the copy got a
	// new generation ID (the guest can tell it is a copy).
	GenID bool
}

// DiskPlan is one disk of the copy: a new qcow2 overlay on the received
// image, which is only read.
type DiskPlan struct {
	Name    string `json:"name"`   // "disk-vda"
	Device  string `json:"device"` // "vda"
	Image   string `json:"image"`  // the received raw image, the overlay's backing file
	Overlay string `json:"overlay"`
	Size    int64  `json:"size"`
}

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

// option is one option of a QEMU command line, its name with one dash.
type option struct {
	name, arg string
	hasArg    bool
}

func parseArgv(argv []string) ([]option, error) {
	var out []option
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return nil, fmt.Errorf("source command line: %q is not an option (an image given without -drive is not supported)", a)
		}
		name := "-" + strings.TrimLeft(a, "-")
		if noArg[name] {
			out = append(out, option{name: name})
			continue
		}
		if i+1 >= len(argv) {
			return nil, fmt.Errorf("source command line: option %s lacks its argument", a)
		}
		out = append(out, option{name: name, arg: argv[i+1], hasArg: true})
		i++
	}
	return out, nil
}

// kvs is a QEMU option string split at commas. An element without '='
// is the option's implied first key (a -machine's type, a -chardev's
// backend, a -device's driver).
type kvs []string

func splitKV(s string) kvs { return kvs(capture.SplitOptions(s)) }

func (o kvs) String() string {
	parts := make([]string, len(o))
	for i, e := range o {
		parts[i] = strings.ReplaceAll(e, ",", ",,")
	}
	return strings.Join(parts, ",")
}

// get returns key's value; key "" is the leading element without '='.
func (o kvs) get(key string) (string, bool) {
	for i, e := range o {
		k, v, ok := strings.Cut(e, "=")
		if key == "" && i == 0 && !ok {
			return e, true
		}
		if ok && k == key {
			return v, true
		}
	}
	return "", false
}

func (o kvs) set(key, val string) kvs {
	for i, e := range o {
		if k, _, ok := strings.Cut(e, "="); ok && k == key {
			o[i] = key + "=" + val
			return o
		}
	}
	return append(o, key+"="+val)
}

func (o kvs) del(keys ...string) kvs {
	return slices.DeleteFunc(o, func(e string) bool {
		k, _, _ := strings.Cut(e, "=")
		for _, key := range keys {
			if k == key || strings.HasPrefix(k, key+".") {
				return true
			}
		}
		return false
	})
}

// blockdev is a -blockdev argument, dotted (driver=file,filename=…) or JSON.
type blockdev struct {
	kv   kvs            // dotted form
	json map[string]any // JSON form
}

func parseBlockdev(arg string) (*blockdev, error) {
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		var m map[string]any
		if err := json.Unmarshal([]byte(arg), &m); err != nil {
			return nil, fmt.Errorf("source command line: -blockdev %.80s: %w", arg, err)
		}
		return &blockdev{json: m}, nil
	}
	return &blockdev{kv: splitKV(arg)}, nil
}

func (b *blockdev) get(key string) string {
	if b.json == nil {
		v, _ := b.kv.get(key)
		return v
	}
	var cur any = b.json
	for _, k := range strings.Split(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[k]
	}
	s, _ := cur.(string)
	return s
}

func (b *blockdev) set(key, val string) {
	if b.json == nil {
		b.kv = b.kv.set(key, val)
		return
	}
	m := b.json
	parts := strings.Split(key, ".")
	for _, k := range parts[:len(parts)-1] {
		sub, ok := m[k].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[k] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = val
}

func (b *blockdev) has(key string) bool {
	if b.json == nil {
		_, ok := b.kv.get(key)
		return ok
	}
	_, ok := b.json[key]
	return ok
}

func (b *blockdev) del(keys ...string) {
	if b.json == nil {
		b.kv = b.kv.del(keys...)
		return
	}
	for _, k := range keys {
		delete(b.json, k)
	}
}

func (b *blockdev) String() string {
	if b.json == nil {
		return b.kv.String()
	}
	out, _ := json.Marshal(b.json)
	return string(out)
}

// fileNode reports whether the format node's "file" names another node
// (a string) rather than describing the protocol inline.
func (b *blockdev) fileNode() (string, bool) {
	if b.json != nil {
		s, ok := b.json["file"].(string)
		return s, ok
	}
	v, ok := b.kv.get("file")
	return v, ok
}

// memoryDevices are the -device drivers that add RAM beside -m: with one
// of them the recorded RAM size is not -m's alone, so -m is kept.
var memoryDevices = []string{"pc-dimm", "nvdimm", "virtio-mem-pci", "virtio-pmem-pci"}

// plan rewrites the source's command line for a copy of m started in
// work from the images in dir (see Plan).
func plan(m *capture.Manifest, images, work string, net Network, qemu string) (*Plan, error) {
	if len(m.Machine.Argv) < 2 {
		return nil, errors.New("the checkpoint records no QEMU command line (machine.argv): it cannot be resumed")
	}
	opts, err := parseArgv(m.Machine.Argv)
	if err != nil {
		return nil, err
	}
	p := &Plan{
		QMP: filepath.Join(work, qmpName), Control: filepath.Join(work, controlName),
		Log: filepath.Join(work, logName), PIDFile: filepath.Join(work, pidName),
	}
	if len(p.Control) > 107 {
		return nil, fmt.Errorf("work directory %s: the QMP socket path %s is longer than a unix socket allows (107 bytes): give a shorter --workdir", work, p.Control)
	}

	// Which -blockdev nodes and -drive options hold the checkpointed disks.
	nodes := map[string]int{} // node-name → index in opts
	for i, o := range opts {
		if o.name == "-blockdev" {
			b, err := parseBlockdev(o.arg)
			if err != nil {
				return nil, err
			}
			if n := b.get("node-name"); n != "" {
				nodes[n] = i
			}
		}
	}
	rewritten := map[int]string{} // opts index → new argument
	for _, d := range m.Disks {
		dp := DiskPlan{Name: d.Name, Device: d.Device, Image: filepath.Join(images, imageName(d.Index)),
			Overlay: filepath.Join(work, d.Name+overlaySfx), Size: d.Size}
		if err := diskArgs(opts, nodes, rewritten, d, dp.Overlay); err != nil {
			return nil, err
		}
		p.Disks = append(p.Disks, dp)
	}

	hasMemDev := slices.ContainsFunc(opts, func(o option) bool {
		drv, _ := splitKV(o.arg).get("")
		return o.name == "-device" && slices.Contains(memoryDevices, drv)
	})
	serialChardev := ""
	for _, o := range opts {
		if o.name == "-serial" {
			serialChardev, _ = strings.CutPrefix(o.arg, "chardev:")
			if serialChardev == o.arg {
				serialChardev = ""
			}
			break
		}
	}
	qmps, serials, nics := 0, 0, 0
	sawSerial, sawMachine := false, false
	argv := []string{qemu}
	add := func(a ...string) { argv = append(argv, a...) }
	for i, o := range opts {
		if a, ok := rewritten[i]; ok {
			add(o.name, a)
			continue
		}
		switch o.name {
		case "-daemonize", "-S", "-incoming", "-loadvm", "-pidfile":
			// ntc runs the process, starts it paused and feeds it.
		case "-readconfig":
			return nil, errors.New("source command line: -readconfig is not supported: the configuration file is not part of the checkpoint")
		case "-nographic":
			add("-display", "none")
		case "-machine", "-M":
			sawMachine = true
			kv := splitKV(o.arg)
			if m.Machine.Type != "" {
				if _, ok := kv.get("type"); ok {
					kv = kv.set("type", m.Machine.Type)
				} else if _, ok := kv.get(""); ok {
					kv[0] = m.Machine.Type
				} else {
					kv = append(kvs{m.Machine.Type}, kv...)
				}
			}
			add(o.name, kv.String())
		case "-m":
			kv := splitKV(o.arg)
			if !hasMemDev && m.Machine.RAMBytes > 0 {
				size := strconv.FormatInt(m.Machine.RAMBytes, 10)
				if m.Machine.RAMBytes%(1<<20) == 0 {
					size = strconv.FormatInt(m.Machine.RAMBytes>>20, 10) + "M"
				}
				if _, ok := kv.get("size"); ok {
					kv = kv.set("size", size)
				} else if _, ok := kv.get(""); ok {
					kv[0] = size
				} else {
					kv = append(kvs{size}, kv...)
				}
			}
			add("-m", kv.String())
		case "-D":
			add("-D", filepath.Join(work, "qemu-debug.log"))
		case "-chardev":
			kv := splitKV(o.arg)
			backend, _ := kv.get("")
			id, _ := kv.get("id")
			if lf, ok := kv.get("logfile"); ok && lf != "" {
				kv = kv.set("logfile", filepath.Join(work, fileName(id)+"-log.log"))
			}
			out := filepath.Join(work, fileName(id)+".log")
			if id == serialChardev {
				out = filepath.Join(work, serialName)
				p.SerialLog = out
			}
			switch backend {
			case "stdio":
				kv = kvs{"file", "id=" + id, "path=" + out}
			case "file":
				kv = kv.set("path", out)
			case "socket":
				if _, ok := kv.get("path"); ok {
					kv = kv.set("path", filepath.Join(work, fileName(id)+".sock"))
				}
			case "pipe":
				return nil, fmt.Errorf("source command line: -chardev pipe %s: named pipes are not moved; use a socket or file chardev", id)
			}
			add("-chardev", kv.String())
		case "-serial", "-monitor", "-qmp", "-qmp-pretty", "-parallel", "-debugcon":
			first := o.name == "-serial" && !sawSerial
			if o.name == "-serial" {
				sawSerial = true
				serials++
			}
			arg := o.arg
			switch {
			case arg == "stdio" || arg == "mon:stdio" || strings.HasPrefix(arg, "file:"):
				if o.name == "-qmp" || o.name == "-qmp-pretty" || o.name == "-monitor" {
					arg = "none"
					if o.name != "-monitor" {
						continue // QMP on stdio: the copy gets a socket instead
					}
					break
				}
				out := filepath.Join(work, fmt.Sprintf("%s-%d.log", o.name[1:], serials))
				if first {
					out = filepath.Join(work, serialName)
					p.SerialLog = out
				}
				arg = "file:" + out
			case strings.HasPrefix(arg, "unix:"):
				kv := splitKV(strings.TrimPrefix(arg, "unix:"))
				var sock string
				switch o.name {
				case "-qmp", "-qmp-pretty":
					qmps++
					sock = p.QMP
					if qmps > 1 {
						sock = filepath.Join(work, fmt.Sprintf("qmp-%d.sock", qmps))
					}
				default:
					sock = filepath.Join(work, fmt.Sprintf("%s-%d.sock", o.name[1:], serials))
				}
				kv[0] = sock
				arg = "unix:" + kv.String()
			}
			add(o.name, arg)
		case "-device":
			kv := splitKV(o.arg)
			drv, _ := kv.get("")
			if drv == "vmgenid" {
				kv = kv.set("guid", "auto")
				p.GenID = true
			}
			if nd, ok := kv.get("netdev"); ok {
				name := nd
				if id, ok := kv.get("id"); ok {
					name = id
				}
				p.NICs = append(p.NICs, name)
			}
			add("-device", kv.String())
		case "-nic":
			kv := splitKV(o.arg)
			id, ok := kv.get("id")
			if !ok {
				nics++
				id = fmt.Sprintf("ntc-nic%d", nics)
				kv = kv.set("id", id)
			}
			if b, _ := kv.get(""); b != "none" {
				p.NICs = append(p.NICs, id)
			}
			add("-nic", kv.String())
		case "-net":
			if net == NetworkOff {
				return nil, errors.New("source command line: a legacy -net option: ntc cannot take those links down; resume with the network on (--network on)")
			}
			add(o.name, o.arg)
		default:
			if o.hasArg {
				add(o.name, o.arg)
			} else {
				add(o.name)
			}
		}
	}
	if !sawMachine && m.Machine.Type != "" {
		add("-machine", m.Machine.Type)
	}
	if qmps == 0 {
		add("-qmp", "unix:"+escape(p.QMP)+",server=on,wait=off")
	}
	add("-qmp", "unix:"+escape(p.Control)+",server=on,wait=off",
		"-pidfile", p.PIDFile, "-S", "-incoming", "defer")
	p.Argv = argv
	if err := checkFiles(opts); err != nil {
		return nil, err
	}
	return p, nil
}

// diskArgs rewrites the options that open disk d so that the guest sees
// the overlay, as qcow2: a -blockdev format node (and the protocol node it
// names) or a -drive.
func diskArgs(opts []option, nodes map[string]int, rewritten map[int]string, d capture.Disk, overlay string) error {
	if i, ok := nodes[d.Node]; ok && d.Node != "" {
		b, _ := parseBlockdev(opts[i].arg)
		switch drv := b.get("driver"); drv {
		case "qcow2":
		case "raw":
			if b.has("offset") || b.has("size") {
				return fmt.Errorf("disk %s: a raw node with offset or size is not supported", d.Device)
			}
		default:
			return fmt.Errorf("disk %s: block node %s has driver %s: ntc resumes qcow2 and raw disks", d.Device, d.Node, drv)
		}
		b.set("driver", "qcow2")
		b.del("backing", "data-file", "offset", "size")
		if fn, ok := b.fileNode(); ok && fn != "" {
			j, ok := nodes[fn]
			if !ok {
				return fmt.Errorf("disk %s: block node %s names file node %s, which the command line does not define", d.Device, d.Node, fn)
			}
			fb, _ := parseBlockdev(opts[j].arg)
			if drv := fb.get("driver"); drv != "file" {
				return fmt.Errorf("disk %s: protocol node %s has driver %s: ntc moves disks on local files", d.Device, fn, drv)
			}
			fb.set("filename", overlay)
			rewritten[j] = fb.String()
		} else {
			b.set("file.driver", "file")
			b.set("file.filename", overlay)
		}
		rewritten[i] = b.String()
		return nil
	}
	for i, o := range opts {
		if o.name != "-drive" {
			continue
		}
		kv := splitKV(o.arg)
		id, _ := kv.get("id")
		nn, _ := kv.get("node-name")
		file, _ := kv.get("file")
		if (d.Node != "" && (id == d.Node || nn == d.Node)) || (d.File != "" && file == d.File) {
			kv = kv.set("file", overlay).set("format", "qcow2").del("backing")
			rewritten[i] = kv.String()
			return nil
		}
	}
	return fmt.Errorf("disk %s: the source's command line has no -blockdev node or -drive %q (file %s) for it", d.Device, d.Node, d.File)
}

// checkFiles checks that the files the command line loads besides the
// disks exist here: the copy must find them at the same paths.
func checkFiles(opts []option) error {
	for _, o := range opts {
		var path string
		switch o.name {
		case "-kernel", "-initrd", "-bios", "-dtb":
			path = o.arg
		default:
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("the source's %s %s is not here (%w): put the same file at that path", o.name, path, err)
		}
	}
	return nil
}

// qemuBinary picks the QEMU to run: the given one, the source's argv[0] if
// it exists here, else its base name on PATH.
func qemuBinary(given, source string) (string, error) {
	if given != "" {
		p, err := exec.LookPath(given)
		if err != nil {
			return "", fmt.Errorf("QEMU binary %s: %w", given, err)
		}
		return p, nil
	}
	if fi, err := os.Stat(source); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return source, nil
	}
	p, err := exec.LookPath(filepath.Base(source))
	if err != nil {
		return "", fmt.Errorf("the source ran %s, which is not here (%w): install that QEMU or name one", source, err)
	}
	return p, nil
}

// imageName is the receiver's name of the image an index file describes.
func imageName(index string) string { return strings.TrimSuffix(index, ".idx") }

// escape doubles commas, QEMU's escape inside option values.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// fileName keeps s usable as a file name part.
func fileName(s string) string {
	if s == "" {
		return "chardev"
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, s)
}
