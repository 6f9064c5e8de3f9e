package chunk

import (
	"errors"
	"fmt"

	"github.com/restic/chunker"
)

// BlockSize is the granularity of hole detection: an aligned all-zero block
// of this size is a hole. It is also the page size of RAM images.
const BlockSize = 4096

// Kind says how an image is cut.
type Kind uint8

const (
	// CDC cuts at content-defined boundaries (restic's Rabin chunker).
	CDC Kind = 1
	// Fixed cuts every BlockSize bytes (the 4 KiB pages of a RAM image).
	Fixed Kind = 2
)

func (k Kind) String() string {
	switch k {
	case CDC:
		return "cdc"
	case Fixed:
		return "fixed"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// DefaultPolynomial is the irreducible polynomial every ntc node cuts with
// unless configured otherwise. Sender and receiver must agree on it: it is
// recorded in every Index.
const DefaultPolynomial = chunker.Pol(0x269aa8404071ad)

// Params fix how an image is cut. They are recorded in every Index, and two
// indexes can only be compared when their Params are equal.
type Params struct {
	Kind Kind
	// Pol is the Rabin polynomial (CDC only).
	Pol chunker.Pol
	// MinSize and MaxSize bound a chunk's length (CDC). For Fixed both are
	// the page size. A chunk may be shorter than MinSize only where a data
	// run or the image ends.
	MinSize, MaxSize uint32
	// AvgBits sets the expected distance past MinSize to a cut: 2^AvgBits
	// bytes (CDC only).
	AvgBits uint8
}

// DefaultCDC returns the content-defined parameters ntc uses for disks and
// device state: chunks of 8 KiB to 64 KiB, about 16 KiB on average. Measured
// on real ext4 images (see chunk/README or the closing note of the foundation
// issue): smaller chunks waste index space, larger ones resend more around
// each 4 KiB write.
func DefaultCDC() Params {
	return Params{Kind: CDC, Pol: DefaultPolynomial, MinSize: 8 << 10, MaxSize: 64 << 10, AvgBits: 13}
}

// CDCWithAverage returns content-defined parameters whose chunks average
// about avg bytes (rounded to a power of two), with MinSize avg/2 and MaxSize
// 4×avg.
func CDCWithAverage(avg uint32) Params {
	bits := uint8(0)
	for (uint32(1) << (bits + 1)) <= avg/2 {
		bits++
	}
	half := uint32(1) << bits
	return Params{Kind: CDC, Pol: DefaultPolynomial, MinSize: half, MaxSize: 8 * half, AvgBits: bits}
}

// Pages returns fixed-size parameters: one chunk per 4 KiB page.
func Pages() Params {
	return Params{Kind: Fixed, MinSize: BlockSize, MaxSize: BlockSize}
}

// ErrParams reports parameters that cannot be used.
var ErrParams = errors.New("invalid chunk parameters")

// Validate checks that p can be used to cut an image.
func (p Params) Validate() error {
	switch p.Kind {
	case CDC:
		if p.Pol == 0 || p.Pol.Deg() < 9 || p.Pol.Deg() > 53 {
			return fmt.Errorf("%w: polynomial %#x must have a degree between 9 and 53", ErrParams, uint64(p.Pol))
		}
		if p.MinSize < 128 || p.MinSize > p.MaxSize || p.MaxSize > 64<<20 {
			return fmt.Errorf("%w: sizes %d..%d must satisfy 128 <= min <= max <= 64 MiB", ErrParams, p.MinSize, p.MaxSize)
		}
		if p.AvgBits < 6 || p.AvgBits > 30 {
			return fmt.Errorf("%w: average bits %d must be 6..30", ErrParams, p.AvgBits)
		}
	case Fixed:
		if p.MinSize != BlockSize || p.MaxSize != BlockSize {
			return fmt.Errorf("%w: fixed size %d..%d: only %d-byte pages are supported", ErrParams, p.MinSize, p.MaxSize, BlockSize)
		}
		if p.Pol != 0 || p.AvgBits != 0 {
			return fmt.Errorf("%w: fixed chunking takes no polynomial", ErrParams)
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrParams, p.Kind)
	}
	return nil
}

// avgSize is the expected chunk length, used to size read windows.
func (p Params) avgSize() int64 {
	if p.Kind == Fixed {
		return int64(p.MinSize)
	}
	return int64(p.MinSize) + int64(1)<<p.AvgBits
}

func (p Params) String() string {
	if p.Kind == Fixed {
		return fmt.Sprintf("fixed/%d", p.MinSize)
	}
	return fmt.Sprintf("cdc/min=%d,avg=2^%d,max=%d,pol=%#x", p.MinSize, p.AvgBits, p.MaxSize, uint64(p.Pol))
}
