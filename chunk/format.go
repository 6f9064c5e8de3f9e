package chunk

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/restic/chunker"
	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/internal/atomicfile"
)

// The index file format, version 1. All integers are big-endian.
//
//	magic     8 bytes  "NTCINDEX"
//	version   u16      1
//	kind      u8       1 = cdc, 2 = fixed
//	avgbits   u8
//	pol       u64      Rabin polynomial (0 for fixed)
//	minsize   u32
//	maxsize   u32
//	size      u64      image size in bytes
//	count     u64      number of entries
//	entries   count ×  uvarint(length<<1 | zero), then 32-byte ID unless zero
//	checksum  32 bytes BLAKE3-256 of everything above
//
// Offsets are not stored: each entry starts where the previous one ends.
const (
	indexMagic   = "NTCINDEX"
	indexVersion = 1
	headerLen    = 8 + 2 + 1 + 1 + 8 + 4 + 4 + 8 + 8
)

// ErrCorruptIndex reports an index that cannot be decoded or is inconsistent.
var ErrCorruptIndex = errors.New("corrupt index")

// ErrIndexVersion reports an index in a format version this code does not
// read (a newer one); it comes wrapped with ErrCorruptIndex.
var ErrIndexVersion = errors.New("index format version not supported")

// WriteTo encodes the index to w in the format above.
func (x *Index) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	h := blake3.New()
	bw := bufio.NewWriterSize(io.MultiWriter(cw, h), 64<<10)
	var hdr [headerLen]byte
	copy(hdr[:], indexMagic)
	binary.BigEndian.PutUint16(hdr[8:], indexVersion)
	hdr[10] = byte(x.Params.Kind)
	hdr[11] = x.Params.AvgBits
	binary.BigEndian.PutUint64(hdr[12:], uint64(x.Params.Pol))
	binary.BigEndian.PutUint32(hdr[20:], x.Params.MinSize)
	binary.BigEndian.PutUint32(hdr[24:], x.Params.MaxSize)
	binary.BigEndian.PutUint64(hdr[28:], uint64(x.Size))
	binary.BigEndian.PutUint64(hdr[36:], uint64(len(x.Entries)))
	bw.Write(hdr[:])
	var vb [binary.MaxVarintLen64]byte
	for _, e := range x.Entries {
		v := uint64(e.Length) << 1
		if e.Zero {
			v |= 1
		}
		bw.Write(vb[:binary.PutUvarint(vb[:], v)])
		if !e.Zero {
			bw.Write(e.ID[:])
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("write index: %w", err)
	}
	if _, err := cw.Write(h.Sum(nil)); err != nil {
		return cw.n, fmt.Errorf("write index: %w", err)
	}
	return cw.n, nil
}

// MarshalBinary encodes the index.
func (x *Index) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	_, err := x.WriteTo(&b)
	return b.Bytes(), err
}

// DecodeIndex reads one index from r, verifying its checksum and structure.
// It never allocates more than the input can justify.
func DecodeIndex(r io.Reader) (*Index, error) {
	h := blake3.New()
	br := bufio.NewReaderSize(r, 64<<10)
	hr := &hashReader{r: br, h: h}
	var hdr [headerLen]byte
	if _, err := io.ReadFull(hr, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorruptIndex, noEOF(err))
	}
	if string(hdr[:8]) != indexMagic {
		return nil, fmt.Errorf("%w: not an ntc index (bad magic)", ErrCorruptIndex)
	}
	if v := binary.BigEndian.Uint16(hdr[8:]); v != indexVersion {
		return nil, fmt.Errorf("%w: %w: version %d, this code reads version %d", ErrCorruptIndex, ErrIndexVersion, v, indexVersion)
	}
	x := &Index{Params: Params{
		Kind:    Kind(hdr[10]),
		AvgBits: hdr[11],
		Pol:     chunker.Pol(binary.BigEndian.Uint64(hdr[12:])),
		MinSize: binary.BigEndian.Uint32(hdr[20:]),
		MaxSize: binary.BigEndian.Uint32(hdr[24:]),
	}}
	if err := x.Params.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptIndex, err)
	}
	size := binary.BigEndian.Uint64(hdr[28:])
	count := binary.BigEndian.Uint64(hdr[36:])
	if size > 1<<62 || count > size {
		return nil, fmt.Errorf("%w: %d entries for an image of %d bytes", ErrCorruptIndex, count, size)
	}
	x.Size = int64(size)
	// Each entry takes at least one byte; grow as entries actually arrive.
	x.Entries = make([]Entry, 0, min(count, 1<<16))
	pos := int64(0)
	for i := uint64(0); i < count; i++ {
		v, err := binary.ReadUvarint(hr)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrCorruptIndex, i, noEOF(err))
		}
		e := Entry{Offset: pos, Length: int64(v >> 1), Zero: v&1 == 1}
		if e.Length <= 0 || e.Length > x.Size-pos {
			return nil, fmt.Errorf("%w: entry %d has length %d at offset %d of %d", ErrCorruptIndex, i, e.Length, pos, x.Size)
		}
		if !e.Zero {
			if _, err := io.ReadFull(hr, e.ID[:]); err != nil {
				return nil, fmt.Errorf("%w: entry %d: %w", ErrCorruptIndex, i, noEOF(err))
			}
		}
		x.Entries = append(x.Entries, e)
		pos += e.Length
	}
	want := h.Sum(nil)
	var got [32]byte
	if _, err := io.ReadFull(br, got[:]); err != nil {
		return nil, fmt.Errorf("%w: checksum: %w", ErrCorruptIndex, noEOF(err))
	}
	if !bytes.Equal(got[:], want) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptIndex)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing bytes after checksum", ErrCorruptIndex)
	}
	if err := x.Check(); err != nil {
		return nil, err
	}
	return x, nil
}

// UnmarshalBinary decodes an index encoded by MarshalBinary.
func (x *Index) UnmarshalBinary(b []byte) error {
	y, err := DecodeIndex(bytes.NewReader(b))
	if err != nil {
		return err
	}
	*x = *y
	return nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

type hashReader struct {
	r   *bufio.Reader
	h   hash.Hash
	one [1]byte
}

func (r *hashReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	return n, err
}

func (r *hashReader) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.one[0] = b
		r.h.Write(r.one[:])
	}
	return b, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}

// WriteIndexFile writes x to path atomically: a reader (or a crash) sees the
// previous file or the complete new one.
func WriteIndexFile(path string, x *Index) error {
	return atomicfile.Write(path, 0o600, func(w io.Writer) error {
		_, err := x.WriteTo(w)
		return err
	})
}

// ReadIndexFile reads and verifies the index at path.
func ReadIndexFile(path string) (*Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	defer f.Close()
	x, err := DecodeIndex(f)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", path, err)
	}
	return x, nil
}
