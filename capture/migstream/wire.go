package migstream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire values from QEMU's savevm.c and ram.c (file format version 3).
const (
	fileMagic   = 0x5145564d // "QEVM"
	fileVersion = 3

	secEOF           = 0x00
	secStart         = 0x01
	secPart          = 0x02
	secEnd           = 0x03
	secFull          = 0x04
	secSubsection    = 0x05
	secVMDescription = 0x06
	secConfiguration = 0x07
	secCommand       = 0x08
	secFooter        = 0x7e

	ramSectionName    = "ram"
	ramSectionVersion = 4

	flagZero         = 0x02
	flagMemSize      = 0x04
	flagPage         = 0x08
	flagEOS          = 0x10
	flagContinue     = 0x20
	flagXBZRLE       = 0x40
	flagHook         = 0x80
	flagCompressPage = 0x100
	flagMultifdFlush = 0x200

	minPageBits = 10
	maxPageBits = 16
	maxPageSize = 1 << maxPageBits

	// readBufSize bounds what Parse holds of the input at once.
	readBufSize = 2 * maxPageSize
)

// zeroPage is never written: it is written out where pages are zero.
var zeroPage = make([]byte, maxPageSize)

// reader reads big-endian fields from a buffered input and counts offsets.
type reader struct {
	br  *bufio.Reader
	off int64
}

func newReader(r io.Reader) *reader {
	return &reader{br: bufio.NewReaderSize(r, readBufSize)}
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}

// next returns the next n bytes (n ≤ readBufSize) and consumes them; the
// slice is valid until the next read.
func (r *reader) next(n int) ([]byte, error) {
	p, err := r.br.Peek(n)
	if err != nil {
		return nil, readErr(err)
	}
	r.br.Discard(n) // cannot fail after a successful Peek
	r.off += int64(n)
	return p, nil
}

func (r *reader) peekByte() (byte, error) {
	p, err := r.br.Peek(1)
	if err != nil {
		return 0, readErr(err)
	}
	return p[0], nil
}

func (r *reader) u8() (byte, error) {
	p, err := r.next(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func (r *reader) u32() (uint32, error) {
	p, err := r.next(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(p), nil
}

func (r *reader) u64() (uint64, error) {
	p, err := r.next(8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(p), nil
}

// str8 reads a string prefixed by its one-byte length.
func (r *reader) str8() (string, error) {
	n, err := r.u8()
	if err != nil {
		return "", err
	}
	p, err := r.next(int(n))
	if err != nil {
		return "", err
	}
	return string(p), nil
}

// rest reads the remaining input, at most limit bytes.
func (r *reader) rest(limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.br, limit+1))
	r.off += int64(len(b))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("more than %d bytes: %w", limit, ErrTooLarge)
	}
	return b, nil
}

func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func appendStr8(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}
