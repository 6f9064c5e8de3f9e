// Package chunk turns disk and memory images into indexes of content-addressed
// chunks, re-indexes only what changed, and keeps chunks in stores.
//
// Vocabulary:
//
//   - An Image is anything with bytes at offsets and a size (an io.ReaderAt):
//     a raw disk, a frozen qcow2 extent list, a page-addressed RAM image.
//   - A chunk is a run of image bytes named by its ID, the BLAKE3-256 of its
//     content. Two images that share content share chunk IDs.
//   - Params fix how an image is cut: content-defined (restic's Rabin
//     chunker, polynomial and size bounds recorded) or fixed-size pages (4 KiB
//     for RAM). Both ends of a transfer must cut with the same Params, so every
//     Index records them.
//   - A block is an aligned 4 KiB piece of the image. An all-zero block is a
//     hole: holes are never chunked, stored or sent, and runs of them become a
//     single zero Entry. Content-defined chunks never span a hole, so the
//     image's data runs (maximal runs of non-zero blocks) are cut
//     independently. Holes in sparse files are found with SEEK_HOLE and never
//     read.
//   - An Index is the ordered list of Entries (offset, length, ID or zero)
//     covering an image exactly, with its Params and size. It has a
//     versioned binary format with a checksum (see format.go).
//   - Reindex re-cuts only around changed ranges, reusing every other entry
//     of the previous index without reading it: the result is identical to a
//     full index of the new image. The same mechanism stitches together the
//     pieces of a parallel full index, so the result does not depend on the
//     number of workers.
//   - A Store holds chunks by ID. DirStore keeps them zstd-compressed in a
//     directory, written atomically and verified on every read. PackStore
//     appends them as records to pack files (pack-NNNNNN.dat, numbered in
//     the order they were made) for one writing process; any number of
//     ReadOnlyPackStores read beside it. Close writes a sidecar per pack
//     (pack-NNNNNN.hdr: the records it maps, checksummed), so that opening
//     reads those instead of every pack (bench/README.md has the
//     difference); what a sidecar does not cover is scanned.
//   - Compaction gives back the space of chunks no longer wanted: the caller
//     says which chunks to keep, and a PackStore's Compact drops the rest.
//     A record is live if its chunk is kept and the map points to it; a pack
//     with nothing live is removed, and one that is mostly dead is
//     rewritten: its live records are copied as they are into the pack being
//     appended to, made durable, and only then is the old pack removed, so a
//     crash leaves at worst a duplicate, which the next Compact removes.
//     Readers keep reading the packs they opened.
//
// The package does not talk to QEMU, the network or the terminal: capture
// decides what changed, sync decides what to send, cmd prints.
package chunk
