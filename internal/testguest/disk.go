package testguest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// DiskTickSize is the size of the record the guest writes at offset 0 of its
// disk every second: "disk tick N\n" padded with NUL bytes.
const DiskTickSize = 512

// ErrNoDiskTick means the image holds no disk tick record: the guest never
// wrote one (or it is not the test guest's disk).
var ErrNoDiskTick = errors.New("no disk tick record")

// FormatDiskTick returns the record the guest writes for tick n.
func FormatDiskTick(n int) []byte {
	b := make([]byte, DiskTickSize)
	copy(b, "disk tick "+strconv.Itoa(n)+"\n")
	return b
}

// ParseDiskTick returns N from a disk tick record (the first DiskTickSize
// bytes of the guest's disk, or fewer).
func ParseDiskTick(sector []byte) (int, error) {
	rest, ok := bytes.CutPrefix(sector, []byte("disk tick "))
	if !ok {
		return 0, ErrNoDiskTick
	}
	digits, _, ok := bytes.Cut(rest, []byte("\n"))
	if !ok || len(digits) == 0 || len(digits) > 18 {
		return 0, fmt.Errorf("%w: malformed record %q", ErrNoDiskTick, sector[:min(len(sector), 32)])
	}
	n := 0
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: malformed record %q", ErrNoDiskTick, sector[:min(len(sector), 32)])
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// ReadDiskTickAt reads the disk tick record from a raw disk image.
func ReadDiskTickAt(r io.ReaderAt) (int, error) {
	b := make([]byte, DiskTickSize)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read disk tick: %w", err)
	}
	return ParseDiskTick(b[:n])
}

// ReadDiskTick returns the last tick the guest wrote to the disk image at
// path: raw, or qcow2 with its backing chain (read with `qemu-img dd -U`,
// so the image may be in use by a running QEMU, though then the newest
// write may still be in flight).
func ReadDiskTick(ctx context.Context, path string) (int, error) {
	format, err := imageFormat(path)
	if err != nil {
		return 0, fmt.Errorf("read disk tick: %w", err)
	}
	if format == "raw" {
		f, err := os.Open(path)
		if err != nil {
			return 0, fmt.Errorf("read disk tick: %w", err)
		}
		defer f.Close()
		return ReadDiskTickAt(f)
	}
	tmp, err := os.MkdirTemp("", "ntc-disktick-")
	if err != nil {
		return 0, fmt.Errorf("read disk tick: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "sector.raw")
	if _, err := run(ctx, "", "qemu-img comes with Debian's qemu-utils", "qemu-img", "dd", "-U", "-f", format, "-O", "raw",
		"bs="+strconv.Itoa(DiskTickSize), "count=1", "if="+path, "of="+out); err != nil {
		return 0, fmt.Errorf("read disk tick of %s: %w", path, err)
	}
	f, err := os.Open(out)
	if err != nil {
		return 0, fmt.Errorf("read disk tick: %w", err)
	}
	defer f.Close()
	n, err := ReadDiskTickAt(f)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
