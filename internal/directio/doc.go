// Package directio writes file data around the page cache (O_DIRECT): for
// data written once and not read back soon, such as a received chunk's
// pack record or a staged image, it saves the kernel's copy into freshly
// allocated cache pages, which costs more CPU than any other step of
// storing a chunk.
//
// Vocabulary: a block is Align bytes, aligned in the file and in memory;
// a direct write covers whole blocks only. Where a file system does not
// offer direct I/O, Open returns nil and callers write as usual.
//
// A page of the cache must never hold bytes of both kinds of write: a
// cached write to part of a page reads the rest from the disk first, and
// writing that page back later would overwrite a direct write with stale
// bytes. Align is a page, so callers keep the two kinds apart by block.
// The package does not do the writes itself: callers know which blocks
// are whole.
package directio
