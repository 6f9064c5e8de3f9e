package debimg

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/zeebo/blake3"
)

// NewBlocks returns the BlockSize blocks of New whose content is nowhere in
// Old (at any block-aligned offset) nor earlier in New, as ranges in
// increasing order, adjacent ones merged: what a tool that deduplicates
// against everything the receiver holds must still send. Blocks of zeros
// and holes are left out (they cost a tool nothing to describe).
func NewBlocks(ctx context.Context, oldPath, newPath string) ([]Range, error) {
	seen := map[[32]byte]struct{}{}
	err := eachBlock(ctx, oldPath, func(_ int64, b []byte) {
		seen[blake3.Sum256(b)] = struct{}{}
	})
	if err != nil {
		return nil, err
	}
	var out []Range
	err = eachBlock(ctx, newPath, func(off int64, b []byte) {
		h := blake3.Sum256(b)
		if _, ok := seen[h]; ok {
			return
		}
		seen[h] = struct{}{}
		if k := len(out) - 1; k >= 0 && out[k].End() == off {
			out[k].Len += int64(len(b))
		} else {
			out = append(out, Range{Off: off, Len: int64(len(b))})
		}
	})
	return out, err
}

// eachBlock calls fn with each block of the file's data extents that is
// not all zeros, in increasing order.
func eachBlock(ctx context.Context, path string, fn func(off int64, b []byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read blocks: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read blocks: %w", err)
	}
	exts, err := dataExtents(f, fi.Size())
	if err != nil {
		return err
	}
	zero := make([]byte, BlockSize)
	buf := make([]byte, compareBuf)
	for _, ext := range exts {
		for off := ext.Off; off < ext.End(); off += compareBuf {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("read blocks: %w", err)
			}
			n := min(compareBuf, ext.End()-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				return fmt.Errorf("read blocks of %s at %d: %w", path, off, err)
			}
			for i := int64(0); i < n; i += BlockSize {
				b := buf[i:min(i+BlockSize, n)]
				if !bytes.Equal(b, zero[:len(b)]) {
					fn(off+i, b)
				}
			}
		}
	}
	return nil
}

// DedupOracle returns the size of New's new blocks (NewBlocks), in offset
// order, compressed by OracleCommand as one stream: the least a tool that
// deduplicates against all of Old would send. It is at most the Oracle
// (blocks that moved or repeat are left out).
func DedupOracle(ctx context.Context, oldPath, newPath string) (int64, error) {
	blocks, err := NewBlocks(ctx, oldPath, newPath)
	if err != nil {
		return 0, err
	}
	f, err := os.Open(newPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return CompressedSize(ctx, f, blocks)
}
