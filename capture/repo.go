package capture

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ntc-project/ntc/chunk"
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

// storeSource serves RAM page images from the store.
type storeSource map[string]*chunk.StoreImage

func (s storeSource) Block(name string, length int64) (io.ReaderAt, error) {
	img, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("no RAM image for block %q in the checkpoint", name)
	}
	if img.Size() < length {
		return nil, fmt.Errorf("RAM image of block %q holds %d bytes, want %d", name, img.Size(), length)
	}
	return img, nil
}

// fileName turns a QEMU name into a file name part: letters, digits, '.',
// '_' and '-' stay, everything else becomes '_'.
func fileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			b[i] = '_'
		}
	}
	out := strings.TrimLeft(string(b), ".")
	if out == "" {
		out = "_"
	}
	return out
}

// uniqueName returns base, or base with a numeric suffix, not in used, and
// adds it.
func uniqueName(used map[string]bool, base string) string {
	name := base
	for i := 2; used[name]; i++ {
		name = base + "-" + strconv.Itoa(i)
	}
	used[name] = true
	return name
}
