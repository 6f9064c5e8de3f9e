// Package migstream splits a QEMU migration stream into page images of the
// guest's RAM plus an opaque device-state blob, and joins them back into a
// stream that `qemu -incoming` accepts.
//
// # Vocabulary
//
//   - Stream: the byte stream QEMU writes for `migrate` (file format version
//     3, magic "QEVM"), either a classic migration or a background snapshot.
//     It is read once, front to back, from any io.Reader (a unix socket, a
//     pipe, a file).
//   - Section: a unit of the stream. A header, an optional CONFIGURATION
//     section (machine type and a few settings, see [Config]), the RAM
//     sections (one START listing the RAM blocks, then PART sections and, in a
//     classic migration, one END), then the non-iterative device sections
//     (FULL), the EOF marker and a JSON VMDESCRIPTION.
//   - RAM block: a named region of guest memory ("pc.ram", "vga.vram",
//     "/rom@etc/acpi/tables", "pc.bios", …) with a length; ROMs are blocks too.
//   - Record: one entry of a RAM section, `be64 offset|flags`, the block name
//     unless the CONTINUE flag says "same block as before", then either one
//     fill byte (ZERO) or one target page of data (PAGE).
//   - Page image: the content of one RAM block addressed by offset, written
//     through a [Sink] while the stream is parsed (never held whole in memory)
//     and read back through a [Source] by [Join]. A ZERO record is a zero page.
//   - Layout: the order in which the stream carried its records, sections
//     included (a few runs per block in practice). With it, [Join] rebuilds
//     the stream byte for byte whenever each page was sent once.
//   - Device blob ([Stream.Devices]): everything after the RAM, from the first
//     device section through the EOF marker, kept opaque; the VMDESCRIPTION
//     JSON that follows it is kept apart in [Stream.Description].
//
// # What QEMU 7.2 writes
//
// A classic migration of a paused guest is START, PART…, END, device
// sections. A background snapshot (capability background-snapshot) writes the
// device state before RAM is write-protected but sends it last, after the
// PART sections, and has no RAM END section; -incoming accepts both. Every
// page of every block is sent at least once; zero pages as ZERO records.
// [Join] writes a ZERO record for every all-zero page it is asked to send,
// ROM blocks included (the destination's ROMs are not zero, so a ZERO record
// must not be dropped), and a PAGE record where the original stream sent an
// all-zero page as PAGE.
//
// # Not supported
//
// The compress, xbzrle and RDMA paths (their records are refused with
// [ErrUnsupported]); multifd, whose pages travel outside the main stream
// (they show up as [Stats.Unsent] pages); postcopy (commands in the stream,
// and the per-block page size it adds to the block list is not detectable);
// mapped-ram and other capabilities the configuration section marks as
// changing the format; iterative sections other than RAM (block migration,
// dirty bitmaps, VFIO); stream version 2 and older. The device state is not
// interpreted, and ZERO records with a non-zero fill byte (pre-2.x QEMU) are
// refused. Target pages are 4 KiB unless the configuration section says
// otherwise, which is right for x86.
package migstream
