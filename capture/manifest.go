package capture

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ntc-project/ntc/internal/safefile"
	"github.com/ntc-project/ntc/repo"
)

// Bounds on what a checkpoint's files may declare: a manifest or stream
// description beyond them is refused before it is read.
const (
	MaxManifestBytes          = 1 << 20
	MaxStreamDescriptionBytes = 16 << 20
	MaxDeviceStateBytes       = 64 << 20
	maxImageBytes             = 1 << 46 // 64 TiB: a disk or RAM block
)

// Sentinel errors of manifest reading.
var (
	// ErrBadManifest: a manifest that is malformed, too large, or names
	// files outside its directory.
	ErrBadManifest = errors.New("bad checkpoint manifest")
	// ErrOldManifest: a manifest of an older ntc (version 1 recorded the
	// source's command line, which no receiver runs any more).
	ErrOldManifest = errors.New("checkpoint manifest of an older ntc")
)

// Names of the images a checkpoint's indexes describe.
const (
	manifestSuffix = ".idx"
	deviceIndex    = "device.idx"
	streamIndex    = "stream.idx"
)

// ManifestVersion is the version of manifest.json this package writes.
// Version 2 describes the machine as data (Machine); version 1 recorded
// the source's command line and is refused (ErrOldManifest).
const ManifestVersion = 2

// Manifest describes one complete checkpoint.
type Manifest struct {
	Version     int       `json:"version"`
	Seq         int       `json:"seq"`
	Parent      int       `json:"parent"` // the previous complete checkpoint, 0 for none
	Created     time.Time `json:"created"`
	QEMUVersion string    `json:"qemu_version"`
	QEMUPackage string    `json:"qemu_package,omitempty"`
	Machine     Machine   `json:"machine"`
	Disks       []Disk    `json:"disks"`
	RAM         []RAM     `json:"ram"`
	// DeviceState is the device blob of the migration stream (everything
	// after the RAM through the EOF marker), CDC-indexed.
	DeviceState ImageRef   `json:"device_state"`
	Stream      StreamInfo `json:"stream"`
	// Method is how RAM was captured: "precopy" or "background-snapshot".
	Method Method `json:"method"`
	// GuestPauseMS is how long the guest was paused: QEMU's STOP to RESUME.
	GuestPauseMS float64 `json:"guest_pause_ms"`
	Stats        Stats   `json:"stats"`
}

// Disk is one disk image of a checkpoint: the guest-visible content at the
// checkpoint instant.
type Disk struct {
	Name   string `json:"name"`   // "disk-vda": the index file is Name+".idx"
	Node   string `json:"node"`   // the node (or -drive id) the disk's device names: Machine's drive references
	Device string `json:"device"` // qdev id ("vda") or drive name
	// File and Format are the image the source's command line names for
	// Node (ntc's overlays sit on top of it while it runs): a record of the
	// source, never opened by a receiver.
	File   string `json:"file"`
	Format string `json:"format"`
	Size   int64  `json:"size"`
	Index  string `json:"index"`
	// Mode is "full" (the whole disk was read) or "incremental" (only the
	// extents written since the parent checkpoint).
	Mode string `json:"mode"`
	// BytesChanged is the size of the extents written since the parent
	// (whole clusters), or the disk size for a full read; BytesRead what
	// was read to index it.
	BytesChanged int64 `json:"bytes_changed"`
	BytesRead    int64 `json:"bytes_read"`
	// Changes, for an incremental disk, names the file that lists the
	// extents written since the parent checkpoint (Repository.Changes).
	Changes string `json:"changes,omitempty"`
}

// RAM is one RAM block of a checkpoint, indexed by 4 KiB page.
type RAM struct {
	Name  string `json:"name"` // QEMU's block name, e.g. "pc.ram", "/rom@etc/acpi/tables"
	Index string `json:"index"`
	Size  int64  `json:"size"`
}

// ImageRef names a CDC-indexed blob of a checkpoint.
type ImageRef struct {
	Index string `json:"index"`
	Size  int64  `json:"size"`
}

// StreamFormat is the format of the stream description blob.
const StreamFormat = "ntc-migstream-1"

// StreamInfo says how to rebuild the migration stream: the stream
// description (header, configuration, RAM block list, record layout,
// VMDESCRIPTION) is a JSON blob, CDC-indexed like the device state; the
// pages come from the RAM indexes and the device state from DeviceState.
// Repository.Stream does it.
type StreamInfo struct {
	Format   string `json:"format"`
	Index    string `json:"index"`
	Size     int64  `json:"size"`
	Machine  string `json:"machine"` // from the stream's configuration section
	PageSize int64  `json:"page_size"`
	// Bytes is the length of the stream QEMU sent.
	Bytes int64 `json:"bytes"`
}

// Stats is what a checkpoint cost and found; `ntc checkpoint --json`
// prints it.
type Stats struct {
	GuestPauseMS float64 `json:"guest_pause_ms"`
	// PauseSteps says where the pause went: QEMU's events and ntc's steps
	// from STOP to RESUME.
	PauseSteps []PauseStep `json:"pause_steps,omitempty"`
	DurationMS float64     `json:"duration_ms"`
	// RAMBytes is the size of all RAM blocks (guest RAM, video RAM, ROMs).
	RAMBytes     int64 `json:"ram_bytes"`
	RAMPages     int64 `json:"ram_pages"`      // non-zero pages
	RAMZeroPages int64 `json:"ram_zero_pages"` // pages that read as zeros
	// RAMPagesNew counts the distinct page contents the store lacked.
	RAMPagesNew int64 `json:"ram_pages_new"`
	RAMBytesNew int64 `json:"ram_bytes_new"`
	// RAMPagesResent counts pages the stream carried more than once (a
	// precopy migration resends what the guest dirtied meanwhile).
	RAMPagesResent int64 `json:"ram_pages_resent"`
	StreamBytes    int64 `json:"stream_bytes"`
	// DiskBytesRead is what was read from the disk layers to index them.
	DiskBytesRead int64 `json:"disk_bytes_read"`
	// DiskBytesChanged is the size of the extents written since the parent
	// checkpoint (whole clusters), or of the whole disks for a full read.
	DiskBytesChanged int64  `json:"disk_bytes_changed"`
	DiskChunksNew    int    `json:"disk_chunks_new"`
	DiskBytesNew     int64  `json:"disk_bytes_new"`
	DeviceBytes      int64  `json:"device_bytes"`
	DiskMode         string `json:"disk_mode"` // "full", "incremental" or "mixed"
	// Committed counts the overlays merged back into their base after the
	// checkpoint; CommitError says why merging failed, if it did (the
	// checkpoint is complete either way).
	Committed   int    `json:"overlays_committed"`
	CommitError string `json:"commit_error,omitempty"`
}

// CheckName accepts the names a manifest gives files (index, image and
// changes files): 1 to 128 letters, digits, '.', '_', '-' and '+', not
// starting with '.'. No separator, no "..": a name stays in its directory.
func CheckName(s string) error {
	if err := repo.CheckName(s); err != nil {
		return fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	return nil
}

// checkIndexName checks a manifest's index file name: CheckName and ".idx".
func checkIndexName(what, s string) error {
	if err := CheckName(s); err != nil {
		return fmt.Errorf("%s index: %w", what, err)
	}
	if !strings.HasSuffix(s, ".idx") || s == ".idx" {
		return fmt.Errorf("%w: %s index %q does not end in .idx", ErrBadManifest, what, s)
	}
	return nil
}

// DecodeManifest decodes and checks a manifest: its version, and every
// file name and size it declares (see Manifest.Check). It does not check
// the machine description against what a receiver allows (package resume
// does).
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadManifest, len(b), MaxManifestBytes)
	}
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	switch {
	case v.Version == 1:
		return nil, fmt.Errorf("%w: version 1 records the source's QEMU command line, which ntc no longer replays", ErrOldManifest)
	case v.Version != ManifestVersion:
		return nil, fmt.Errorf("%w: version %d, this ntc reads %d", ErrBadManifest, v.Version, ManifestVersion)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// EncodeManifest writes m as manifest.json holds it.
func EncodeManifest(m *Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Check checks the names and sizes m declares: every index, image and
// changes file name passes CheckName (index files end in .idx, and no two
// images share a name), sizes are within bounds.
func (m *Manifest) Check() error {
	seen := map[string]bool{}
	image := func(what, index string, size, limit int64) error {
		if err := checkIndexName(what, index); err != nil {
			return err
		}
		if seen[index] {
			return fmt.Errorf("%w: %s index %q is named twice", ErrBadManifest, what, index)
		}
		seen[index] = true
		if size < 0 || size > limit {
			return fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrBadManifest, what, size, limit)
		}
		return nil
	}
	for _, d := range m.Disks {
		if err := CheckName(d.Name); err != nil {
			return fmt.Errorf("disk: %w", err)
		}
		if err := image("disk "+d.Name, d.Index, d.Size, maxImageBytes); err != nil {
			return err
		}
		if d.Changes != "" {
			if err := CheckName(d.Changes); err != nil {
				return fmt.Errorf("disk %s changes: %w", d.Name, err)
			}
		}
	}
	for _, r := range m.RAM {
		if len(r.Name) == 0 || len(r.Name) > 256 {
			return fmt.Errorf("%w: RAM block name of %d bytes", ErrBadManifest, len(r.Name))
		}
		if err := image("RAM block "+r.Name, r.Index, r.Size, maxImageBytes); err != nil {
			return err
		}
	}
	if err := image("device state", m.DeviceState.Index, m.DeviceState.Size, MaxDeviceStateBytes); err != nil {
		return err
	}
	return image("stream description", m.Stream.Index, m.Stream.Size, MaxStreamDescriptionBytes)
}

// ReadManifestFile reads the manifest called name in root: a regular file
// of at most MaxManifestBytes (checked before reading), decoded and
// checked by DecodeManifest.
func ReadManifestFile(root *os.Root, name string) (*Manifest, error) {
	b, err := ReadFileBounded(root, name, -1, MaxManifestBytes)
	if err != nil {
		return nil, err
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

// ReadFileBounded reads the regular file called name in root (no path
// leads out of root, no symbolic link is followed: internal/safefile).
// With size >= 0 the file must hold exactly size bytes; it must never hold
// more than limit. Both are checked before anything is read.
func ReadFileBounded(root *os.Root, name string, size, limit int64) ([]byte, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	switch {
	case size < 0:
		return safefile.Read(root, name, limit)
	case size > limit:
		return nil, fmt.Errorf("%s: the manifest says %d bytes, more than the %d allowed: refused", name, size, limit)
	}
	b, err := safefile.ReadSize(root, name, size)
	if err != nil {
		return nil, fmt.Errorf("%w (the manifest says %d bytes)", err, size)
	}
	return b, nil
}

// OpenRegular opens the file called name in root for reading: a regular
// file (not a device, FIFO, directory or symbolic link), inside root.
// name must pass CheckName (manifest.json does).
func OpenRegular(root *os.Root, name string) (*os.File, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	return safefile.Open(root, name, safefile.NoLimit)
}

// imageName returns the name of an image of a checkpoint: prefix and
// QEMU's name for it made safe (repo.SafeName), with a numeric suffix if
// used has it already, short enough that its index file's name (+".idx")
// passes CheckName. It adds the name to used.
func imageName(used map[string]bool, prefix, qemuName string) string {
	const maxLen = repo.MaxName - len(".idx")
	base := prefix + repo.SafeName(qemuName)
	name := base[:min(len(base), maxLen)]
	for i := 2; used[name]; i++ {
		suffix := "-" + strconv.Itoa(i)
		name = base[:min(len(base), maxLen-len(suffix))] + suffix
	}
	used[name] = true
	return name
}
