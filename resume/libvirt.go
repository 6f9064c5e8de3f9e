package resume

// Resuming a checkpoint as a libvirt domain.
//
// The copy is a transient domain of the local libvirt daemon, named after
// the set, so that virsh and virt-manager list and manage it. libvirt
// builds QEMU's command line itself from a domain XML; ntc writes that XML
// from the checkpoint's machine description once validate has accepted it
// (never from text the checkpoint carries), with the same devices at the
// same PCI addresses, disks on files in the work directory, the first
// serial port on a socket there (and logged to serial.log), and user-mode
// NICs. The RAM and device state reach QEMU through libvirt's own restore
// (virDomainRestoreFlags, paused): ntc writes a libvirt save image
// (src/qemu/qemu_saveimage.c: the header "LibvirtQemudSave", version 2,
// the XML's length, was-running, format raw, no cookie; the XML with its
// NUL; then QEMU's migration stream as migstream.Join rebuilds it) into
// a FIFO in the work directory while libvirt reads it, so that the guest's
// RAM is never written to a file there (libvirt hands the descriptor to
// QEMU for its incoming migration, as for a save file). The restore is
// bounded by LibvirtConfig.LoadTimeout: past it, the FIFO is cut off and
// the domain destroyed (restoreWithin). Then the
// NIC links are set down through libvirt (virDomainUpdateDeviceFlags with
// <link state='down'/>, so that libvirt's XML says so too) and the domain
// resumed. The link state is part of a NIC's migrated state, so a link
// written down in the XML before the restore would come back up with it.
//
// libvirt runs QEMU as its own user and labels every file the domain
// uses for it (chown, restored when the domain ends). The received images
// stay private to the receiver: each disk is copied into the work
// directory (internal/clonefile: a reflink where the filesystem shares
// extents, else its data extents only; a file of its own either way, so
// that libvirt's chown of it leaves the store alone) under a new qcow2
// overlay that takes the guest's writes (so that capture.Adopt can make the copy the set's
// guest, as for a plain copy), and the kernel and initrd named for a
// directly booted guest are copied there too. The work directory is 0711
// so that libvirt's QEMU user gets through to the files libvirt hands it;
// every file in it is 0600.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/internal/clonefile"
	"github.com/ntc-project/ntc/repo"
)

// LibvirtConfig says which checkpoint to resume as a libvirt domain.
type LibvirtConfig struct {
	// Images is the directory holding the checkpoint's images (as Config).
	Images string
	// WorkDir gets the copy's disks, console socket, serial log and domain
	// XML; created if needed (0711), and refused if it holds an earlier
	// copy's disks.
	WorkDir string
	// Name is the domain's name (the set's); no domain of that name may
	// exist.
	Name string
	// Connect is the libvirt URI; "" for capture.DefaultLibvirtURI.
	Connect string
	// Network: NetworkOff (the default, "") or NetworkOn.
	Network Network
	// Kernel, Initrd: this machine's files for a directly booted guest.
	Kernel, Initrd string
	// Persistent defines the copy in libvirt once it runs (virsh start
	// boots it again after a shutdown); otherwise it is transient and
	// libvirt forgets it when it stops. A persistent domain of the name
	// that is shut off and has the guest's UUID (its original, or a
	// persistent copy that ran here before) takes the copy, and its
	// definition becomes the copy's, whatever Persistent says.
	Persistent bool
	// Manifest overrides Images/manifest.json.
	Manifest *capture.Manifest
	// LoadTimeout bounds libvirt's restore of the checkpoint (QEMU's start
	// and its load of the migration stream); 0: DefaultLoadTimeout.
	LoadTimeout time.Duration
}

// LibvirtDisk is one disk of a libvirt copy.
type LibvirtDisk struct {
	Device string `json:"device"` // the source's device name
	Target string `json:"target"` // libvirt's target ("vda")
	File   string `json:"file"`   // the copy's qcow2 in the work directory
	// Copy is how the received image under File was copied: "reflink"
	// (extents shared with the store's) or "sparse" (its data copied).
	Copy clonefile.Method `json:"copy,omitempty"`
}

// LibvirtDomain is a copy running as a libvirt domain.
type LibvirtDomain struct {
	Name    string `json:"domain"`
	UUID    string `json:"uuid"`
	URI     string `json:"uri"`
	WorkDir string `json:"workdir"`
	// XML is the domain XML ntc wrote (also WorkDir/domain.xml).
	XML string `json:"-"`
	// Console is the serial console's socket, SerialLog its log; "" when
	// the machine has no serial port.
	Console   string        `json:"console,omitempty"`
	SerialLog string        `json:"serial_log,omitempty"`
	Disks     []LibvirtDisk `json:"disks"`
	// LinksDown are the MAC addresses of the NICs whose link ntc set down.
	LinksDown  []string          `json:"links_down,omitempty"`
	Persistent bool              `json:"persistent"`
	Manifest   *capture.Manifest `json:"-"`
	Timings    LibvirtTimings    `json:"timings"`
}

// LibvirtTimings is where the time of a libvirt resume went.
type LibvirtTimings struct {
	Total   time.Duration `json:"total"`
	Prepare time.Duration `json:"prepare"` // checks, disk copies
	// DiskCopy is the part of Prepare that copied the received disks.
	DiskCopy time.Duration `json:"disk_copy"`
	Restore  time.Duration `json:"restore"` // virDomainRestoreFlags, the stream fed meanwhile
	// StreamBytes is the migration stream in the save image.
	StreamBytes int64 `json:"stream_bytes"`
}

// Files in a libvirt copy's work directory.
const (
	libvirtXMLFile = "domain.xml"
	// libvirtOldXMLFile keeps the definition a copy replaced (see
	// reusableDomain).
	libvirtOldXMLFile = "replaced-domain.xml"
	libvirtSaveImage  = "restore.save"
	libvirtConsole    = "console.sock"
	libvirtSerialLog  = "serial.log"
)

// StartLibvirt resumes the checkpoint in cfg.Images as a libvirt domain
// named cfg.Name, transient unless cfg.Persistent (see the top of this
// file). A description outside
// the allowlist, or with a device the domain XML cannot express, is
// refused (ErrRefused) before anything is made. On error no domain is
// left and the disks made for it are removed.
func StartLibvirt(ctx context.Context, cfg LibvirtConfig) (d *LibvirtDomain, err error) {
	t0 := time.Now()
	if err := checkDomainName(cfg.Name); err != nil {
		return nil, err
	}
	c, err := openCheckpoint(cfg.Network, cfg.WorkDir, cfg.Images, cfg.Manifest)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m, work := c.m, c.work
	h := libvirtHost{name: cfg.Name, work: work, hugePages: c.hugePages}
	if k := m.Machine.Kernel; k != nil {
		if cfg.Kernel == "" {
			return nil, fmt.Errorf("resume: the guest booted the kernel %s directly: %w", k.Kernel.Name, ErrNeedKernel)
		}
		h.kernel = filepath.Join(work, "vmlinuz")
		if k.Initrd != nil {
			if cfg.Initrd == "" {
				return nil, fmt.Errorf("resume: the guest booted with the initrd %s: %w", k.Initrd.Name, ErrNeedInitrd)
			}
			h.initrd = filepath.Join(work, "initrd.img")
		}
	}
	def, err := domainXML(m, h)
	if err != nil {
		return nil, fmt.Errorf("resume checkpoint %d as a libvirt domain: %w", m.Seq, err)
	}
	conn, err := capture.DialLibvirt(ctx, cfg.Connect, 0)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	defer conn.Close()
	oldDom, old, err := reusableDomain(conn, cfg.Name, m.Machine.UUID)
	if err != nil {
		return nil, err
	}
	reuse := old != ""
	// The copy keeps the source's UUID (the guest's SMBIOS system UUID
	// after a reboot) unless a domain here has it: the original, still
	// defined beside its copy.
	if reuse {
		h.uuid = m.Machine.UUID
		if def, err = domainXML(m, h); err != nil {
			return nil, fmt.Errorf("resume checkpoint %d as a libvirt domain: %w", m.Seq, err)
		}
	} else if u, ok := parseUUID(m.Machine.UUID); ok {
		if _, err := conn.DomainLookupByUUID(u); err != nil {
			h.uuid = m.Machine.UUID
			if def, err = domainXML(m, h); err != nil {
				return nil, fmt.Errorf("resume checkpoint %d as a libvirt domain: %w", m.Seq, err)
			}
		}
	}

	d = &LibvirtDomain{Name: cfg.Name, URI: conn.URI, WorkDir: work, XML: def.xml, Disks: def.disks, Manifest: m}
	if def.serial {
		d.Console, d.SerialLog = filepath.Join(work, libvirtConsole), filepath.Join(work, libvirtSerialLog)
	}
	if err := reachable(work); err != nil {
		return nil, err
	}
	if err := prepareLibvirtWorkDir(work, def.disks); err != nil {
		return nil, err
	}
	made := []string{filepath.Join(work, libvirtSaveImage)}
	defer func() {
		if err != nil {
			for _, f := range made {
				os.Remove(f)
			}
		}
		os.Remove(filepath.Join(work, libvirtSaveImage))
	}()
	for _, c := range [][2]string{{cfg.Kernel, h.kernel}, {cfg.Initrd, h.initrd}} {
		if c[1] == "" {
			continue
		}
		made = append(made, c[1])
		if err := copyPrivate(c[0], c[1]); err != nil {
			return nil, fmt.Errorf("resume: copy %s into the work directory: %w", c[0], err)
		}
	}
	for i, dd := range def.disks {
		made = append(made, dd.File, diskBase(dd.File))
		t := time.Now()
		if d.Disks[i].Copy, err = makeDisk(ctx, c.disks[def.diskImage[i]], dd.File); err != nil {
			return nil, fmt.Errorf("resume: disk %s: %w", dd.Device, err)
		}
		d.Timings.DiskCopy += time.Since(t)
	}
	if err := writeFilePrivate(filepath.Join(work, libvirtXMLFile), []byte(def.xml)); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	save := filepath.Join(work, libvirtSaveImage)
	hdr, err := encodeSaveHeader(def.xml)
	if err != nil {
		return nil, fmt.Errorf("resume: the save image: %w", err)
	}
	feed, err := feedSaveImage(ctx, save, hdr, func(ctx context.Context, w io.Writer) error { return migstream.Join(ctx, w, c.stream, c.src) })
	if err != nil {
		return nil, fmt.Errorf("resume: the save image: %w", err)
	}
	d.Timings.Prepare = time.Since(t0)

	if reuse {
		// The old definition goes while the copy is restored under its
		// name and UUID, and comes back if that fails.
		if err := writeFilePrivate(filepath.Join(work, libvirtOldXMLFile), []byte(old)); err != nil {
			return nil, fmt.Errorf("resume: keep the shut-off definition of %s: %w", cfg.Name, err)
		}
		if err := conn.DomainUndefine(oldDom); err != nil {
			return nil, fmt.Errorf("resume: replace the shut-off definition of %s (virDomainUndefine): %w", cfg.Name, err)
		}
		defer func() {
			if err != nil {
				if _, derr := conn.DomainDefineXMLFlags(old, 0); derr != nil {
					err = fmt.Errorf("%w; and the old definition of %s could not be put back (%v): it is saved in %s", err, cfg.Name, derr, filepath.Join(work, libvirtOldXMLFile))
				}
			}
		}()
	}
	t1 := time.Now()
	d.Timings.StreamBytes, err = restoreWithin(ctx, conn, cfg.Name, feed, cmp.Or(cfg.LoadTimeout, DefaultLoadTimeout))
	if err != nil {
		return nil, err
	}
	d.Timings.Restore = time.Since(t1)
	dom, err := conn.DomainLookupByName(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("resume: the restored domain %s: %w", cfg.Name, err)
	}
	defer func() {
		if err != nil {
			conn.DomainDestroy(dom)
		}
	}()
	// libvirt's restore takes no cancellation: a start cancelled
	// meanwhile ends here, the domain destroyed.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	d.UUID = capture.UUIDString(dom.UUID)
	if c.network == NetworkOff {
		for _, nic := range def.nics {
			if err := conn.DomainUpdateDeviceFlags(dom, nic.xml(true), libvirt.DomainDeviceModifyLive); err != nil {
				return nil, fmt.Errorf("resume: set the link of NIC %s down (virDomainUpdateDeviceFlags): %w", nic.mac, err)
			}
			d.LinksDown = append(d.LinksDown, nic.mac)
		}
	}
	if err := conn.DomainResume(dom); err != nil {
		return nil, fmt.Errorf("resume: start the guest (virDomainResume): %w", err)
	}
	state, _, err := conn.DomainGetState(dom, 0)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	if libvirt.DomainState(state) != libvirt.DomainRunning {
		return nil, fmt.Errorf("resume: the domain is in state %d after virDomainResume, not running", state)
	}
	if cfg.Persistent || reuse {
		def, err := conn.DomainGetXMLDesc(dom, libvirt.DomainXMLInactive|libvirt.DomainXMLSecure)
		if err == nil {
			_, err = conn.DomainDefineXMLFlags(def, libvirt.DomainDefineValidate)
		}
		if err != nil {
			return nil, fmt.Errorf("resume: define the copy as a persistent domain: %w", err)
		}
		d.Persistent = true
	}
	d.Timings.Total = time.Since(t0)
	return d, nil
}

// Destroy stops the copy at once (virDomainDestroy); a copy libvirt no
// longer runs is no error.
func (d *LibvirtDomain) Destroy(ctx context.Context) error {
	conn, err := capture.DialLibvirt(ctx, d.URI, 0)
	if err != nil {
		return fmt.Errorf("destroy libvirt domain %s: %w", d.Name, err)
	}
	defer conn.Close()
	dom, err := conn.DomainLookupByName(d.Name)
	if err != nil {
		return nil
	}
	if err := conn.DomainDestroy(dom); err != nil {
		if active, aerr := conn.DomainIsActive(dom); aerr == nil && active == 0 {
			return nil
		}
		return fmt.Errorf("destroy libvirt domain %s: %w", d.Name, err)
	}
	return nil
}

// reusableDomain returns the definition of the domain named name that
// libvirt already has, when it may give way to the copy: only a persistent
// domain that is shut off and has the checkpoint's UUID, i.e. this guest's
// own definition (the original coming back, or a persistent copy that ran
// here before). Its definition is then replaced by the copy's, whose disks
// hold the guest's state now (starting the old definition later would boot
// stale disks). It returns "" when there is no such domain; any other
// domain of that name is refused, and nothing is touched.
func reusableDomain(conn *capture.LibvirtConn, name, uuid string) (libvirt.Domain, string, error) {
	dom, err := conn.DomainLookupByName(name)
	if err != nil {
		return dom, "", nil
	}
	refuse := func(why string) (libvirt.Domain, string, error) {
		return dom, "", fmt.Errorf("resume: libvirt at %s has a domain named %s already (%s): undefine or rename it (virsh -c %s undefine %s), or give another name",
			conn.URI, name, why, conn.URI, name)
	}
	state, _, err := conn.DomainGetState(dom, 0)
	if err != nil {
		return dom, "", fmt.Errorf("resume: the existing domain %s: %w", name, err)
	}
	persistent, err := conn.DomainIsPersistent(dom)
	if err != nil {
		return dom, "", fmt.Errorf("resume: the existing domain %s: %w", name, err)
	}
	switch {
	case libvirt.DomainState(state) != libvirt.DomainShutoff:
		return refuse("it is not shut off")
	case persistent == 0:
		return refuse("transient")
	case !strings.EqualFold(capture.UUIDString(dom.UUID), uuid):
		return refuse("another guest: its UUID is " + capture.UUIDString(dom.UUID))
	}
	def, err := conn.DomainGetXMLDesc(dom, libvirt.DomainXMLInactive|libvirt.DomainXMLSecure)
	if err != nil {
		return dom, "", fmt.Errorf("resume: the existing domain %s: %w", name, err)
	}
	return dom, def, nil
}

// parseUUID reads a UUID as libvirt writes it.
func parseUUID(s string) (libvirt.UUID, bool) {
	var u libvirt.UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) || len(s) != 36 {
		return u, false
	}
	copy(u[:], b)
	return u, true
}

// checkDomainName accepts the names ntc gives domains: a set's name
// (repo.CheckName) that does not start with '-', which virsh would take
// for an option.
func checkDomainName(name string) error {
	if err := repo.CheckName(name); err != nil {
		return fmt.Errorf("resume: domain name: %w", err)
	}
	if name[0] == '-' {
		return fmt.Errorf("resume: domain name %q: must not start with '-' (virsh would read it as an option): %w", name, repo.ErrBadName)
	}
	return nil
}

// reachable checks that libvirt's QEMU, which runs as its own user, can
// pass through every directory above work (a work directory under /root
// cannot be reached).
func reachable(work string) error {
	for dir := filepath.Dir(work); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("resume: libvirt runs QEMU as its own user, which cannot pass through %s (mode %v) to the copy's disks in %s: "+
				"give a work directory it can reach (--workdir /var/lib/libvirt/images/ntc-NAME, or one under /srv)", dir, fi.Mode().Perm(), work)
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

// prepareLibvirtWorkDir creates the work directory (0711: libvirt's QEMU
// user passes through it to the files libvirt hands it) and refuses one
// holding an earlier copy's disks.
func prepareLibvirtWorkDir(work string, disks []LibvirtDisk) error {
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := os.Chmod(work, 0o711); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	for _, d := range disks {
		_, err := os.Lstat(d.File)
		if errors.Is(err, fs.ErrNotExist) {
			_, err = os.Lstat(diskBase(d.File))
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("resume: %s holds the disk of an earlier copy (%s, with that copy's writes): remove it or give another work directory: %w",
				work, filepath.Base(d.File), ErrWorkDirInUse)
		}
	}
	for _, f := range []string{libvirtConsole, libvirtSerialLog, libvirtSaveImage} {
		os.Remove(filepath.Join(work, f)) // of a copy that has stopped
	}
	return nil
}

// makeDisk makes the copy's disk at dst: a copy of the received raw image
// img beside it (Base: a reflink where the filesystem shares extents, else
// a copy of its data extents, holes left holes; a file of its own, which
// libvirt may chown for its QEMU user without touching the store), and at
// dst a new qcow2 overlay on that copy, which takes the guest's writes.
// The copy stays as received, as capture.Adopt wants the layer under a
// copy's overlay. Both 0600.
func makeDisk(ctx context.Context, img *os.File, dst string) (clonefile.Method, error) {
	base := diskBase(dst)
	m, err := clonefile.Clone(img, base, 0o600)
	if err != nil {
		return "", err
	}
	if err := privateFile(dst, os.O_EXCL); err != nil {
		return "", err
	}
	fi, err := img.Stat()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", base,
		dst, strconv.FormatInt(fi.Size(), 10)).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("qemu-img create: %w: %s", err, bytes.TrimSpace(out))
	}
	return m, os.Chmod(dst, 0o600)
}

// diskBase is the file under the copy's disk file: "disk-vda.base.raw"
// under "disk-vda.qcow2".
func diskBase(disk string) string { return strings.TrimSuffix(disk, ".qcow2") + ".base.raw" }

// copyPrivate copies the local file src to dst (0600), replacing an
// earlier copy's.
func copyPrivate(src, dst string) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_, err := clonefile.CopyFile(src, dst, 0o600)
	return err
}

func writeFilePrivate(path string, b []byte) error { return atomicfile.WriteBytes(path, 0o600, b) }

// libvirt's save image (src/qemu/qemu_saveimage.h): a header of the magic
// and u32 fields in the host's byte order, the domain XML with its NUL
// (data_len bytes), then QEMU's migration stream, raw.
const (
	saveMagic   = "LibvirtQemudSave"
	saveVersion = 2
)

type saveHeader struct {
	Magic        [16]byte
	Version      uint32
	DataLen      uint32
	WasRunning   uint32
	Format       uint32 // 0: raw
	CookieOffset uint32
	Unused       [14]uint32
}

// encodeSaveHeader is the header and XML of a save image of def.
func encodeSaveHeader(def string) ([]byte, error) {
	if strings.IndexByte(def, 0) >= 0 {
		return nil, errors.New("domain XML holds a NUL byte")
	}
	h := saveHeader{Version: saveVersion, DataLen: uint32(len(def) + 1), WasRunning: 1}
	copy(h.Magic[:], saveMagic)
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, &h); err != nil {
		return nil, err
	}
	b.WriteString(def)
	b.WriteByte(0)
	return b.Bytes(), nil
}

// decodeSaveHeader reads what encodeSaveHeader wrote: the XML, and the
// header's length with it. It bounds the XML before reading it.
func decodeSaveHeader(r io.Reader) (string, int64, error) {
	var h saveHeader
	if err := binary.Read(r, binary.NativeEndian, &h); err != nil {
		return "", 0, fmt.Errorf("save image header: %w", err)
	}
	if string(h.Magic[:]) != saveMagic || h.Version != saveVersion || h.Format != 0 || h.CookieOffset != 0 {
		return "", 0, fmt.Errorf("not a raw libvirt save image of version %d", saveVersion)
	}
	if h.DataLen == 0 || h.DataLen > 16<<20 {
		return "", 0, fmt.Errorf("save image: XML of %d bytes", h.DataLen)
	}
	b := make([]byte, h.DataLen)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", 0, fmt.Errorf("save image XML: %w", err)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b), int64(binary.Size(h)) + int64(h.DataLen), nil
}

// restorer is the part of libvirt's API a restore uses.
type restorer interface {
	DomainRestoreFlags(from string, dxml libvirt.OptString, flags uint32) error
	DomainLookupByName(name string) (libvirt.Domain, error)
	DomainDestroy(dom libvirt.Domain) error
}

// restoreRetry is how often restoreWithin tries again to destroy a domain
// whose restore it gave up on (libvirt defines the domain while it
// starts QEMU).
const restoreRetry = 200 * time.Millisecond

// restoreWithin has libvirt restore the domain name, paused, from the save
// image feed writes, and returns how much of the stream feed wrote.
// libvirt's restore takes no cancellation: when limit passes or ctx ends
// first, the feed is cut off (QEMU reads the end of its stream and fails
// the load; a libvirt that has not opened the image yet finds none) and
// the domain destroyed (a QEMU that reads nothing), and the error says so
// (ErrLoadTimeout, or ctx's). A restore libvirt refuses is
// ErrIncompatible.
func restoreWithin(ctx context.Context, lv restorer, name string, feed *saveFeed, limit time.Duration) (int64, error) {
	done := make(chan error, 1)
	go func() {
		done <- lv.DomainRestoreFlags(feed.path, libvirt.OptString{}, uint32(libvirt.DomainSavePaused))
	}()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	var rerr, cause error
	select {
	case rerr = <-done:
	case <-timer.C:
		cause = ErrLoadTimeout
	case <-ctx.Done():
		cause = ctx.Err()
	}
	if cause != nil {
		feed.abort()
		retry := time.NewTicker(restoreRetry)
		defer retry.Stop()
		for waiting := true; waiting; {
			if dom, err := lv.DomainLookupByName(name); err == nil {
				lv.DomainDestroy(dom)
			}
			select {
			case rerr = <-done:
				waiting = false
			case <-retry.C:
			}
		}
		if rerr == nil { // restored just then: it goes too
			if dom, err := lv.DomainLookupByName(name); err == nil {
				lv.DomainDestroy(dom)
			}
		}
	}
	n, ferr := feed.end(rerr == nil && cause == nil)
	switch {
	case errors.Is(cause, ErrLoadTimeout):
		return n, fmt.Errorf("resume: libvirt had not restored the checkpoint after %s (%d bytes of the stream fed), so it was stopped: "+
			"if the guest is that large or this machine that busy, allow more time with --load-timeout (resume.load-timeout): %w", limit, n, ErrLoadTimeout)
	case cause != nil:
		return n, fmt.Errorf("resume: the restore was stopped: %w", cause)
	case rerr != nil && ferr != nil:
		return n, fmt.Errorf("resume: feed the migration stream: %w (libvirt: %v)", ferr, rerr)
	case rerr != nil:
		return n, fmt.Errorf("resume: libvirt did not restore the checkpoint (virDomainRestoreFlags): %w: %w", rerr, ErrIncompatible)
	}
	return n, nil
}

// saveFeed writes a save image into a FIFO while libvirt restores from it.
type saveFeed struct {
	path   string
	f      *os.File
	cancel context.CancelFunc
	done   chan struct{}
	n      int64 // stream bytes written
	err    error
}

// feedSaveImage makes a FIFO at path (0600) and writes into it, as libvirt
// reads, the save image's header hdr (encodeSaveHeader) and what body
// writes (the stream): the guest's RAM never lands in a file of the work
// directory. ntc holds both ends (O_RDWR), so that libvirt's open does not
// wait for a writer and a reader that goes away does not end the writer
// with SIGPIPE; end stops it.
func feedSaveImage(ctx context.Context, path string, hdr []byte, body func(context.Context, io.Writer) error) (*saveFeed, error) {
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("mkfifo %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	sf := &saveFeed{path: path, f: f, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sf.done)
		cw := &countWriter{w: f}
		_, err := f.Write(hdr)
		if err == nil {
			err = body(ctx, cw)
		}
		sf.n, sf.err = cw.n, err
	}()
	return sf, nil
}

// abort cuts the image off: the FIFO goes first, so that a libvirt that
// has not opened it yet finds none (rather than waiting in open for a
// writer forever), then ntc's end of it, so that a reader gets the end of
// its stream.
func (sf *saveFeed) abort() {
	os.Remove(sf.path)
	sf.cancel()
	sf.f.Close()
}

// end stops the writer once libvirt's restore has returned and reports
// how much of the stream it wrote. After a restore (restored), QEMU has
// read the stream up to its end marker and may have left the description
// after it unread: the writer's being cut off there is no error.
func (sf *saveFeed) end(restored bool) (int64, error) {
	if restored {
		select {
		case <-sf.done:
		case <-time.After(time.Second):
		}
	}
	sf.cancel()
	sf.f.Close()
	<-sf.done
	if restored || errors.Is(sf.err, os.ErrClosed) || errors.Is(sf.err, context.Canceled) {
		return sf.n, nil
	}
	return sf.n, sf.err
}

// libvirtHost is what the receiver brings to a domain XML.
type libvirtHost struct {
	name, work     string
	uuid           string // "": libvirt makes one
	kernel, initrd string // in work; "" none
	hugePages      bool
}

// libvirtNIC is a NIC of the copy, as virDomainUpdateDeviceFlags takes it.
type libvirtNIC struct {
	mac, model string
	addr       string // the <address/> element
}

func (n libvirtNIC) xml(down bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<interface type='user'><mac address='%s'/><model type='%s'/>", esc(n.mac), esc(n.model))
	if down {
		b.WriteString("<link state='down'/>")
	}
	b.WriteString(n.addr + "</interface>")
	return b.String()
}

// domainDef is a domain XML and what goes with it.
type domainDef struct {
	xml       string
	disks     []LibvirtDisk
	diskImage []int // index into the manifest's disks, per disk
	nics      []libvirtNIC
	serial    bool
}

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return strings.ReplaceAll(b.String(), "'", "&#39;")
}

// libvirtModels maps the -device drivers a domain XML can express to what
// libvirt calls them.
var (
	libvirtNICModels = map[string]string{"virtio-net-pci": "virtio", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139", "vmxnet3": "vmxnet3"}
	libvirtUSB       = map[string]string{"piix3-usb-uhci": "piix3-uhci", "qemu-xhci": "qemu-xhci", "nec-usb-xhci": "nec-xhci", "ich9-usb-ehci1": "ich9-ehci1", "usb-ehci": "ehci"}
	libvirtVideo     = map[string]string{"VGA": "vga", "cirrus-vga": "cirrus", "virtio-vga": "virtio", "bochs-display": "bochs"}
	libvirtInputs    = map[string]string{"usb-tablet": "tablet", "usb-mouse": "mouse", "usb-kbd": "keyboard"}
	libvirtMachProps = []string{"usb", "dump-guest-core", "vmport", "smm"}
)

// pciAddress is the <address/> of a device at bus and addr ("0x2",
// "0x1.2", "0x1.0x2"). buses gives the libvirt controller index of each
// bus: 0 for the root bus (pci.0 or pcie.0), N for the root port that is
// the domain's controller N.
func pciAddress(d capture.Device, buses map[string]int) (string, error) {
	bus, ok := buses[d.Bus]
	if !ok {
		return "", refuse("device %s (%s) on bus %q: ntc puts devices on the root PCI bus of a libvirt domain or on its PCIe root ports only", d.ID, d.Driver, d.Bus)
	}
	slot, fn, _ := strings.Cut(d.Addr, ".")
	s, err1 := strconv.ParseUint(strings.TrimPrefix(slot, "0x"), 16, 8)
	f, err2 := strconv.ParseUint(strings.TrimPrefix(cmp.Or(fn, "0"), "0x"), 16, 8)
	if d.Addr == "" || err1 != nil || err2 != nil || s > 31 || f > 7 {
		return "", refuse("device %s (%s): PCI address %q", d.ID, d.Driver, d.Addr)
	}
	multi := ""
	if slices.Contains([]string{"on", "true", "yes"}, d.Props["multifunction"]) {
		multi = " multifunction='on'"
	}
	return fmt.Sprintf("<address type='pci' domain='0x0000' bus='0x%02x' slot='0x%02x' function='0x%x'%s/>", bus, s, f, multi), nil
}

// rootPortBuses numbers the PCIe root ports of a description as libvirt's
// PCI controllers 1, 2, … in their order (libvirt fills a gap in the
// numbers with controllers of its own, which the source did not have),
// after the root bus 0.
func rootPortBuses(devices []capture.Device) map[string]int {
	buses := map[string]int{"pci.0": 0, "pcie.0": 0}
	for _, d := range devices {
		if slices.Contains(rootPorts, d.Driver) && d.ID != "" {
			buses[d.ID] = len(buses) - 1
		}
	}
	return buses
}

// domainXML writes the domain XML of a validated description (see the top
// of this file). What a domain XML cannot express the way the source had
// it is refused (ErrRefused): libvirt would build another machine, which
// the migration stream would not fit.
func domainXML(m *capture.Manifest, h libvirtHost) (*domainDef, error) {
	mc := &m.Machine
	switch {
	case !slices.Contains(mc.Flags, "nodefaults"):
		return nil, refuse("a source without -nodefaults (QEMU's default devices): libvirt builds every device itself; resume it without --libvirt")
	case mc.DefaultNIC || len(mc.Drives) > 0 || len(mc.Serials) > 0 || len(mc.Globals) > 0 || mc.VGA != "":
		return nil, refuse("a source with -nic, -drive if=, -serial, -global or -vga options: a libvirt domain expresses devices only; resume it without --libvirt")
	case mc.Firmware != nil:
		return nil, refuse("a source with its own -bios: resume it without --libvirt")
	case mc.Kernel != nil && mc.Kernel.DTB != nil:
		return nil, refuse("a -dtb")
	case mc.RAM.BackendID != "" && mc.RAM.BackendID != "pc.ram":
		return nil, refuse("RAM backend %q: libvirt names the RAM pc.ram", mc.RAM.BackendID)
	}
	for k := range mc.Props {
		if !slices.Contains(libvirtMachProps, k) {
			return nil, refuse("machine property %s: resume it without --libvirt", k)
		}
	}
	for _, n := range mc.NICs {
		if n.Nic {
			return nil, refuse("-nic %s: resume it without --libvirt", n.ID)
		}
	}
	for _, o := range mc.Objects {
		if o.Type != "rng-builtin" {
			return nil, refuse("-object %s: resume it without --libvirt", o.Type)
		}
	}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	typ := "qemu"
	if mc.Accel == "kvm" {
		typ = "kvm"
	}
	p("<domain type='%s'>\n  <name>%s</name>\n", typ, esc(h.name))
	if h.uuid != "" {
		p("  <uuid>%s</uuid>\n", esc(h.uuid))
	}
	p("  <memory unit='KiB'>%d</memory>\n", mc.RAM.Size>>10)
	if h.hugePages {
		p("  <memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages><source type='memfd'/><access mode='shared'/></memoryBacking>\n")
	}
	p("  <vcpu placement='static'>%d</vcpu>\n", mc.CPU.Count)
	p("  <os>\n    <type arch='%s' machine='%s'>hvm</type>\n", esc(mc.Arch), esc(mc.Type))
	if h.kernel != "" {
		p("    <kernel>%s</kernel>\n", esc(h.kernel))
		if h.initrd != "" {
			p("    <initrd>%s</initrd>\n", esc(h.initrd))
		}
		p("    <cmdline>%s</cmdline>\n", esc(mc.Kernel.Append))
	}
	p("  </os>\n  <features>")
	if !slices.Contains(mc.Flags, "no-acpi") {
		p("<acpi/>")
	}
	for _, k := range []string{"vmport", "smm"} {
		if v, ok := mc.Props[k]; ok {
			st := "off"
			if slices.Contains([]string{"on", "true", "yes"}, v) {
				st = "on"
			}
			p("<%s state='%s'/>", k, st)
		}
	}
	p("</features>\n")
	switch c := mc.CPU; c.Model {
	case "":
	case "host":
		p("  <cpu mode='host-passthrough' check='none'>")
	case "max":
		p("  <cpu mode='maximum' check='none'>")
	default:
		p("  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>%s</model>", esc(c.Model))
	}
	if c := mc.CPU; c.Model != "" {
		if c.Sockets > 0 {
			p("<topology sockets='%d' dies='%d' cores='%d' threads='%d'/>", c.Sockets, max(c.Dies, 1), max(c.Cores, 1), max(c.Threads, 1))
		}
		for _, f := range c.Features {
			policy := "require"
			if slices.Contains([]string{"off", "false", "no"}, f.Value) {
				policy = "disable"
			} else if !slices.Contains([]string{"on", "true", "yes"}, f.Value) {
				return nil, refuse("CPU property %s=%s: resume it without --libvirt", f.Name, f.Value)
			}
			p("<feature policy='%s' name='%s'/>", policy, esc(f.Name))
		}
		p("</cpu>\n")
	}
	offset := cmp.Or(mc.RTC["base"], "utc")
	if offset != "utc" && offset != "localtime" {
		return nil, refuse("-rtc base=%s: resume it without --libvirt", offset)
	}
	p("  <clock offset='%s'>", offset)
	if slices.Contains(mc.Flags, "no-hpet") {
		p("<timer name='hpet' present='no'/>")
	}
	p("</clock>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n")

	def := &domainDef{}
	diskOf := map[string]int{}
	for i, d := range m.Disks {
		diskOf[d.Node] = i
	}
	usb, balloon := false, false
	buses := rootPortBuses(mc.Devices)
	for _, d := range mc.Devices {
		var addr string
		if d.Driver != "isa-serial" && !strings.HasPrefix(d.Driver, "usb-") {
			var err error
			if addr, err = pciAddress(d, buses); err != nil {
				return nil, err
			}
		}
		boot := ""
		if o := d.Props["bootindex"]; o != "" {
			boot = fmt.Sprintf("<boot order='%s'/>", esc(o))
		}
		switch {
		case slices.Contains(rootPorts, d.Driver):
			// chassis and port as the source had them: libvirt would
			// choose its own, which the migrated config space would not fit.
			chassis, err1 := strconv.ParseUint(d.Props["chassis"], 0, 8)
			port, err2 := strconv.ParseUint(d.Props["port"], 0, 8)
			if d.ID == "" || err1 != nil || err2 != nil {
				return nil, refuse("root port %q without an id, chassis and port: libvirt would choose its own; resume it without --libvirt", d.ID)
			}
			for k := range d.Props {
				if !slices.Contains([]string{"chassis", "port", "multifunction", "hotplug"}, k) {
					return nil, refuse("root port %s: property %s: resume it without --libvirt", d.ID, k)
				}
			}
			hotplug := ""
			if v, ok := d.Props["hotplug"]; ok {
				hotplug = " hotplug='on'"
				if slices.Contains([]string{"off", "false", "no"}, v) {
					hotplug = " hotplug='off'"
				}
			}
			p("    <controller type='pci' index='%d' model='pcie-root-port'><model name='%s'/><target chassis='%d' port='0x%x'%s/>%s</controller>\n",
				buses[d.ID], d.Driver, chassis, port, hotplug, addr)
		case d.Driver == "virtio-blk-pci":
			i, ok := diskOf[d.Props["drive"]]
			if !ok {
				return nil, refuse("device %s: drive %q is not a disk the checkpoint carries", d.ID, d.Props["drive"])
			}
			target := "vd" + string(rune('a'+len(def.disks)))
			if len(def.disks) >= 26 {
				return nil, refuse("more than 26 virtio disks")
			}
			file := filepath.Join(h.work, m.Disks[i].Name+".qcow2")
			def.disks = append(def.disks, LibvirtDisk{Device: m.Disks[i].Device, Target: target, File: file})
			def.diskImage = append(def.diskImage, i)
			p("    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/><target dev='%s' bus='virtio'/>%s%s</disk>\n",
				esc(file), target, boot, addr)
		case libvirtNICModels[d.Driver] != "":
			n := libvirtNIC{mac: d.Props["mac"], model: libvirtNICModels[d.Driver], addr: addr}
			if n.mac == "" {
				return nil, refuse("NIC %s without a MAC address: libvirt would make up another", d.ID)
			}
			def.nics = append(def.nics, n)
			p("    %s\n", strings.Replace(n.xml(false), "</interface>", boot+"</interface>", 1))
		case d.Driver == "isa-serial":
			port := cmp.Or(d.Props["index"], "0")
			if !def.serial {
				def.serial = true
				p("    <serial type='unix'><source mode='bind' path='%s'/><log file='%s' append='off'/><target type='isa-serial' port='%s'><model name='isa-serial'/></target></serial>\n",
					esc(filepath.Join(h.work, libvirtConsole)), esc(filepath.Join(h.work, libvirtSerialLog)), esc(port))
			} else {
				p("    <serial type='null'><target type='isa-serial' port='%s'><model name='isa-serial'/></target></serial>\n", esc(port))
			}
		case libvirtUSB[d.Driver] != "":
			usb = true
			p("    <controller type='usb' index='0' model='%s'>%s</controller>\n", libvirtUSB[d.Driver], addr)
		case libvirtInputs[d.Driver] != "":
			p("    <input type='%s' bus='usb'>", libvirtInputs[d.Driver])
			if port := d.Props["port"]; port != "" {
				p("<address type='usb' bus='0' port='%s'/>", esc(port))
			}
			p("</input>\n")
		case libvirtVideo[d.Driver] != "":
			vram := ""
			if mb, err := strconv.Atoi(d.Props["vgamem_mb"]); err == nil && mb > 0 {
				vram = fmt.Sprintf(" vram='%d'", mb*1024)
			}
			p("    <video><model type='%s'%s heads='1' primary='yes'/>%s</video>\n", libvirtVideo[d.Driver], vram, addr)
		case d.Driver == "virtio-balloon-pci":
			balloon = true
			p("    <memballoon model='virtio'>%s</memballoon>\n", addr)
		case d.Driver == "virtio-rng-pci":
			p("    <rng model='virtio'><backend model='builtin'/>%s</rng>\n", addr)
		case d.Driver == "virtio-serial-pci":
			p("    <controller type='virtio-serial' index='0'>%s</controller>\n", addr)
		case d.Driver == "virtio-scsi-pci":
			p("    <controller type='scsi' index='0' model='virtio-scsi'>%s</controller>\n", addr)
		default:
			return nil, refuse("device %s (%s): ntc does not write it into a libvirt domain; resume it without --libvirt", d.ID, d.Driver)
		}
	}
	if !usb {
		p("    <controller type='usb' model='none'/>\n")
	}
	if !balloon {
		p("    <memballoon model='none'/>\n")
	}
	p("  </devices>\n</domain>\n")
	if len(def.disks) != len(m.Disks) {
		return nil, refuse("the checkpoint carries %d disks, the description attaches %d through virtio", len(m.Disks), len(def.disks))
	}
	def.xml = b.String()
	return def, nil
}
