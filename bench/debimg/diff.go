package debimg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// BlockSize is the unit in which images are compared: a file system block
// and a memory page.
const BlockSize = 4096

// compareBuf is how much of each image ChangedBlocks reads at a time.
const compareBuf = 8 << 20

// Range is a byte range of an image.
type Range struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// End returns the offset just past r.
func (r Range) End() int64 { return r.Off + r.Len }

// ChangedBlocks compares two files of the same size block by block and
// returns the blocks whose content differs, as ranges in increasing order,
// adjacent ones merged. A last block shorter than BlockSize counts as a
// block. Regions that are holes in both files are skipped unread.
func ChangedBlocks(ctx context.Context, oldPath, newPath string) ([]Range, error) {
	of, err := os.Open(oldPath)
	if err != nil {
		return nil, fmt.Errorf("compare images: %w", err)
	}
	defer of.Close()
	nf, err := os.Open(newPath)
	if err != nil {
		return nil, fmt.Errorf("compare images: %w", err)
	}
	defer nf.Close()
	size, err := sameSize(of, nf)
	if err != nil {
		return nil, err
	}
	oldData, err := dataExtents(of, size)
	if err != nil {
		return nil, err
	}
	newData, err := dataExtents(nf, size)
	if err != nil {
		return nil, err
	}
	var out []Range
	ob := make([]byte, compareBuf)
	nb := make([]byte, compareBuf)
	for _, ext := range union(oldData, newData) {
		for off := ext.Off; off < ext.End(); off += compareBuf {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("compare images: %w", err)
			}
			n := min(compareBuf, ext.End()-off)
			if _, err := of.ReadAt(ob[:n], off); err != nil {
				return nil, fmt.Errorf("compare images: read %s: %w", oldPath, err)
			}
			if _, err := nf.ReadAt(nb[:n], off); err != nil {
				return nil, fmt.Errorf("compare images: read %s: %w", newPath, err)
			}
			out = appendChanged(out, ob[:n], nb[:n], off)
		}
	}
	return out, nil
}

// appendChanged compares o and n, which start at off, block by block and
// appends the differing blocks to rs, merging with its last range.
func appendChanged(rs []Range, o, n []byte, off int64) []Range {
	for i := 0; i < len(o); i += BlockSize {
		j := min(i+BlockSize, len(o))
		if bytes.Equal(o[i:j], n[i:j]) {
			continue
		}
		at := off + int64(i)
		if k := len(rs) - 1; k >= 0 && rs[k].End() == at {
			rs[k].Len += int64(j - i)
		} else {
			rs = append(rs, Range{Off: at, Len: int64(j - i)})
		}
	}
	return rs
}

func sameSize(a, b *os.File) (int64, error) {
	as, err := a.Stat()
	if err != nil {
		return 0, fmt.Errorf("compare images: %w", err)
	}
	bs, err := b.Stat()
	if err != nil {
		return 0, fmt.Errorf("compare images: %w", err)
	}
	if as.Size() != bs.Size() {
		return 0, fmt.Errorf("compare images: %s is %d bytes, %s is %d: want the same size",
			a.Name(), as.Size(), b.Name(), bs.Size())
	}
	return as.Size(), nil
}

// dataExtents returns the parts of f that are not holes, widened to whole
// blocks. Where the file system cannot tell, the whole file is data.
func dataExtents(f *os.File, size int64) ([]Range, error) {
	fd := int(f.Fd())
	var out []Range
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			if off == 0 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
				return []Range{{0, size}}, nil
			}
			return nil, fmt.Errorf("find data in %s: %w", f.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("find holes in %s: %w", f.Name(), err)
		}
		start := data / BlockSize * BlockSize
		end := min(size, (hole+BlockSize-1)/BlockSize*BlockSize)
		if k := len(out) - 1; k >= 0 && out[k].End() >= start {
			out[k].Len = end - out[k].Off
		} else {
			out = append(out, Range{Off: start, Len: end - start})
		}
		off = hole
	}
	return out, nil
}

// union merges two sorted lists of disjoint ranges.
func union(a, b []Range) []Range {
	var out []Range
	for len(a) > 0 || len(b) > 0 {
		var r Range
		if len(b) == 0 || (len(a) > 0 && a[0].Off <= b[0].Off) {
			r, a = a[0], a[1:]
		} else {
			r, b = b[0], b[1:]
		}
		if k := len(out) - 1; k >= 0 && out[k].End() >= r.Off {
			out[k].Len = max(out[k].End(), r.End()) - out[k].Off
		} else {
			out = append(out, r)
		}
	}
	return out
}

// WriteBlocks writes the content of r in ranges, in order, to w.
func WriteBlocks(w io.Writer, r io.ReaderAt, ranges []Range) error {
	buf := make([]byte, compareBuf)
	for _, rg := range ranges {
		for off := rg.Off; off < rg.End(); off += compareBuf {
			n := min(compareBuf, rg.End()-off)
			if _, err := r.ReadAt(buf[:n], off); err != nil {
				return fmt.Errorf("read changed blocks at %d: %w", off, err)
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		}
	}
	return nil
}

// OracleCommand compresses standard input to standard output as the oracle is
// defined: zstd level 3, one thread, so the size does not depend on the
// machine.
var OracleCommand = []string{"zstd", "-3", "-T1", "-q", "-c"}

// CompressedSize returns the size of r's content in ranges, concatenated in
// order and compressed by OracleCommand (the zstd command-line tool, Debian
// package zstd).
func CompressedSize(ctx context.Context, r io.ReaderAt, ranges []Range) (int64, error) {
	cmd := exec.CommandContext(ctx, OracleCommand[0], OracleCommand[1:]...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	var count countWriter
	var stderr bytes.Buffer
	cmd.Stdout = &count
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("compress changed blocks: %w (install Debian's zstd package)", err)
	}
	werr := WriteBlocks(in, r, ranges)
	cerr := in.Close()
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("compress changed blocks: %s: %w: %s",
			strings.Join(OracleCommand, " "), err, strings.TrimSpace(stderr.String()))
	}
	if werr != nil {
		return 0, fmt.Errorf("compress changed blocks: %w", werr)
	}
	if cerr != nil {
		return 0, fmt.Errorf("compress changed blocks: %w", cerr)
	}
	return count.n, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// sumLen returns the total length of ranges.
func sumLen(ranges []Range) int64 {
	var n int64
	for _, r := range ranges {
		n += r.Len
	}
	return n
}
