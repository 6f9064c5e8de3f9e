package migstream

import (
	"errors"
	"fmt"
	"io"
)

// Limits on what a stream may declare. They bound the memory a malformed
// stream can make Parse allocate; a real guest stays far below them.
const (
	// MaxBlockLength is the largest RAM block accepted (256 GiB).
	MaxBlockLength = 1 << 38
	// MaxBlocks is the largest number of RAM blocks accepted.
	MaxBlocks = 4096
	// MaxDeviceState is the largest device blob (with its VMDESCRIPTION)
	// accepted.
	MaxDeviceState = 256 << 20
	// DefaultPageSize is the target page size of a stream whose configuration
	// section does not state one (x86).
	DefaultPageSize = 4096
)

// Sentinel errors. Parse and Join wrap them with what was being read.
var (
	// ErrNotStream: the input does not start with the QEVM magic.
	ErrNotStream = errors.New("not a QEMU migration stream")
	// ErrVersion: the file format version is not 3.
	ErrVersion = errors.New("unsupported migration stream version")
	// ErrTruncated: the input ended inside the stream.
	ErrTruncated = errors.New("truncated migration stream")
	// ErrUnsupported: the stream uses a feature this package does not handle
	// (compression, xbzrle, multifd, RDMA, postcopy, non-RAM iterative
	// sections, …). The message names it.
	ErrUnsupported = errors.New("unsupported migration stream feature")
	// ErrMalformed: the stream breaks the format.
	ErrMalformed = errors.New("malformed migration stream")
	// ErrTooLarge: a length in the stream exceeds one of the limits above.
	ErrTooLarge = errors.New("migration stream exceeds a limit")
	// ErrInvalid: the Stream handed to Join is inconsistent.
	ErrInvalid = errors.New("invalid stream description")
)

// ParseError reports where in the input Parse failed. Err wraps one of the
// sentinels above, or the reader's or sink's own error.
type ParseError struct {
	Offset int64 // bytes of the input consumed when the error was found
	Err    error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("migration stream at byte %d: %v", e.Offset, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// Stream is everything a migration stream holds except the content of RAM
// pages: enough, together with the page images, for Join to rebuild it.
type Stream struct {
	// Config is the CONFIGURATION section, nil if the stream has none (old
	// machine types).
	Config *Config
	// RAM identifies the RAM section; zero when the stream has no RAM.
	RAM RAMHeader
	// Footers is true when every section ends with a section footer (the
	// default since QEMU 2.4).
	Footers bool
	// Blocks lists the RAM blocks in stream order.
	Blocks []Block
	// Layout is the order of the RAM records in the stream.
	Layout Layout
	// Devices holds the device state: the bytes from the first section after
	// the RAM through the QEMU_VM_EOF marker, opaque.
	Devices []byte
	// Description is the VMDESCRIPTION JSON after the EOF marker. Every
	// stream ends with one (a stream without it reads as truncated).
	Description []byte
	// Stats counts what Parse saw; Join ignores it.
	Stats Stats
}

// PageSize returns the target page size, the unit of RAM records.
func (s *Stream) PageSize() int64 {
	if s.Config != nil && s.Config.PageBits != 0 {
		return 1 << s.Config.PageBits
	}
	return DefaultPageSize
}

// RAMHeader is the header of the RAM START section.
type RAMHeader struct {
	SectionID  uint32 // referred to by the PART and END sections
	InstanceID uint32
	Version    uint32 // 4
}

// Block is one RAM block.
type Block struct {
	Name   string // QEMU's idstr, e.g. "pc.ram", "/rom@etc/acpi/tables"
	Length int64  // used_length in bytes, a multiple of the page size
	// Addr is the block's guest address, present in the stream only with
	// the x-ignore-shared capability.
	Addr uint64
}

// SectionType is the wire value of a RAM section's type.
type SectionType uint8

// RAM section types.
const (
	SectionStart SectionType = 0x01 // lists the blocks
	SectionPart  SectionType = 0x02 // one iteration's pages
	SectionEnd   SectionType = 0x03 // the last pages of a classic migration
)

func (t SectionType) String() string {
	switch t {
	case SectionStart:
		return "START"
	case SectionPart:
		return "PART"
	case SectionEnd:
		return "END"
	}
	return fmt.Sprintf("SectionType(%#x)", uint8(t))
}

// Layout is the order of a stream's RAM records. The first section is the
// START section; a stream without RAM has no sections.
type Layout struct {
	Sections []Section
}

// Section is one RAM section and the records it carried, in order.
type Section struct {
	Type SectionType
	Runs []Run
}

// Run is a sequence of records for consecutive pages of one block.
type Run struct {
	Block int   // index into Stream.Blocks
	Page  int64 // first page: byte offset / page size
	Count int64 // number of pages, at least 1
	// Named is true when the first record names its block; the others, and
	// all records of an unnamed run, say CONTINUE.
	Named bool
	// ForcePage is true when the records are PAGE records although the
	// pages are all zero; otherwise a page is sent as ZERO exactly when it is
	// all zero.
	ForcePage bool
}

// CanonicalLayout returns the layout Join uses for blocks whose original
// order is unknown: a START section, then one PART section that sends every
// page of every block in order. Like a background snapshot it has no END
// section.
func CanonicalLayout(blocks []Block, pageSize int64) Layout {
	part := Section{Type: SectionPart}
	for i, b := range blocks {
		if n := b.Length / pageSize; n > 0 {
			part.Runs = append(part.Runs, Run{Block: i, Page: 0, Count: n, Named: true})
		}
	}
	l := Layout{Sections: []Section{{Type: SectionStart}}}
	if len(part.Runs) > 0 {
		l.Sections = append(l.Sections, part)
	}
	return l
}

// Stats counts the RAM records of a parsed stream.
type Stats struct {
	Pages  int64 // PAGE records
	Zeros  int64 // ZERO records
	Resent int64 // records for a page that an earlier record had already sent
	// Unsent counts pages of the blocks that no record sent: they read as
	// zero in the images. Multifd, free-page hinting and x-ignore-shared
	// leave pages unsent; QEMU's own classic and background-snapshot
	// streams send every page.
	Unsent int64
}

// Sink receives the page images while Parse reads the stream.
type Sink interface {
	// Block is called once per RAM block, in stream order, when the RAM
	// START section has been read, before any page. Parse then calls
	// WriteAt on the returned writer for each record: once per page, with
	// a page-aligned offset, never concurrently. A ZERO record is a
	// WriteAt of a zero page, or a WriteZeroAt call if the writer is a
	// [ZeroWriterAt]. A nil writer discards the block's pages.
	Block(name string, length int64) (io.WriterAt, error)
}

// ZeroWriterAt is implemented by block writers that record a zero range
// more cheaply than by writing zeros (a sparse file, an index of holes).
type ZeroWriterAt interface {
	WriteZeroAt(off, n int64) error
}

// Source gives Join the page images.
type Source interface {
	// Block returns the image of the named block, at least length bytes
	// long. A nil reader stands for an all-zero image.
	Block(name string, length int64) (io.ReaderAt, error)
}
