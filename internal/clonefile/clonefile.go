package clonefile

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Method is how a file was copied.
type Method string

const (
	Reflink Method = "reflink" // the copy shares the source's extents
	Sparse  Method = "sparse"  // the source's data extents were copied
)

// Clone makes dst, a new file with mode perm (it must not exist), a copy
// of src's content: a reflink where the filesystem allows it, else a copy
// of src's data extents. On error dst is removed.
func Clone(src *os.File, dst string, perm os.FileMode) (m Method, err error) {
	fi, err := src.Stat()
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", src.Name(), err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("clone %s: not a regular file", src.Name())
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", src.Name(), err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("clone %s to %s: %w", src.Name(), dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := unix.IoctlFileClone(int(out.Fd()), int(src.Fd())); err == nil {
		return Reflink, nil
	} else if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) &&
		!errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.ENOSYS) {
		return "", fmt.Errorf("clone %s to %s (FICLONE): %w", src.Name(), dst, err)
	}
	if err := copyData(out, src, fi.Size()); err != nil {
		return "", fmt.Errorf("copy %s to %s: %w", src.Name(), dst, err)
	}
	return Sparse, nil
}

// CopyFile is Clone of the file at src.
func CopyFile(src, dst string, perm os.FileMode) (Method, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	return Clone(in, dst, perm)
}

// copyData copies the data extents of src (size bytes) into the empty out
// at the same offsets and makes out size bytes long.
func copyData(out, src *os.File, size int64) error {
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data past off
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			// A filesystem that cannot tell: all of it is data.
			if err := copyRange(out, src, off, size-off); err != nil {
				return err
			}
			break
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		hole = min(hole, size)
		if err := copyRange(out, src, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return out.Truncate(size)
}

// copyRange copies n bytes at off of src to the same offset of out, in the
// kernel where it can (copy_file_range), else through a buffer.
func copyRange(out, src *os.File, off, n int64) error {
	for n > 0 {
		roff, woff := off, off
		c, err := unix.CopyFileRange(int(src.Fd()), &roff, int(out.Fd()), &woff, int(min(n, 1<<30)), 0)
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
			// Filesystems or kernels without it: the plain way.
			w := io.NewOffsetWriter(out, off)
			if c, err := io.Copy(w, io.NewSectionReader(src, off, n)); err != nil || c != n {
				return fmt.Errorf("copy %d bytes at %d: %d copied: %v", n, off, c, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("copy_file_range at %d: %w", off, err)
		}
		if c == 0 {
			return fmt.Errorf("copy at %d: the source ended %d bytes early (changed while copied?)", off, n)
		}
		off, n = off+int64(c), n-int64(c)
	}
	return nil
}
