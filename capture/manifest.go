package capture

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

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
// leads out of root, no symlink out of it is followed). With size >= 0 the
// file must hold exactly size bytes; it must never hold more than limit.
// Both are checked before anything is read.
func ReadFileBounded(root *os.Root, name string, size, limit int64) ([]byte, error) {
	f, err := OpenRegular(root, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case fi.Size() > limit:
		return nil, fmt.Errorf("%s holds %d bytes, more than the %d allowed: refused", name, fi.Size(), limit)
	case size >= 0 && fi.Size() != size:
		return nil, fmt.Errorf("%s holds %d bytes, the manifest says %d", name, fi.Size(), size)
	}
	var buf bytes.Buffer
	buf.Grow(int(fi.Size()))
	// The file may grow meanwhile: read what was declared, no more.
	if _, err := io.Copy(&buf, io.LimitReader(f, fi.Size())); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(buf.Len()) != fi.Size() {
		return nil, fmt.Errorf("read %s: %d bytes, it held %d", name, buf.Len(), fi.Size())
	}
	return buf.Bytes(), nil
}

// OpenRegular opens the file called name in root for reading and checks
// that it is a regular file (not a device, FIFO or directory). name must
// pass CheckName (manifest.json does).
func OpenRegular(root *os.Root, name string) (*os.File, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s in %s is not a regular file (%s): refused", name, root.Name(), fi.Mode().Type())
	}
	return f, nil
}
