package chunk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Image is the read side of an image source: bytes at offsets and a size.
// Concurrent ReadAt calls must be safe, as io.ReaderAt already requires.
type Image interface {
	io.ReaderAt
	Size() int64
}

// HoleLister is implemented by images that know ranges that read as zeros
// without reading them, such as holes in a sparse file. Indexing never reads
// those ranges.
type HoleLister interface {
	Holes(ctx context.Context) ([]Range, error)
}

// File is an image backed by a regular file or block device.
type File struct {
	f    *os.File
	size int64
}

var (
	_ Image      = (*File)(nil)
	_ HoleLister = (*File)(nil)
)

// OpenFile opens the image at path for reading.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open image: %w", err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("open image %s: is a directory, want a disk image file or block device", path)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open image %s: size: %w", path, err)
	}
	return &File{f: f, size: size}, nil
}

// ReadAt reads from the image.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// Size returns the image size in bytes.
func (f *File) Size() int64 { return f.size }

// Name returns the path the image was opened with.
func (f *File) Name() string { return f.f.Name() }

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Holes lists the file's holes with SEEK_DATA and SEEK_HOLE. On file systems
// without them it reports no holes.
func (f *File) Holes(ctx context.Context) ([]Range, error) {
	fd := int(f.f.Fd())
	var holes []Range
	pos := int64(0)
	for pos < f.size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			holes = append(holes, Range{pos, f.size - pos})
			break
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list holes of %s: %w", f.f.Name(), err)
		}
		if data > pos {
			holes = append(holes, Range{pos, data - pos})
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("list holes of %s: %w", f.f.Name(), err)
		}
		pos = hole
	}
	return holes, nil
}

// Bytes is an in-memory image.
type Bytes []byte

// ReadAt reads from the image.
func (b Bytes) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Size returns len(b).
func (b Bytes) Size() int64 { return int64(len(b)) }
