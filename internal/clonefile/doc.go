// Package clonefile copies files as cheaply as the filesystem allows: a
// reflink (FICLONE: the copy shares the original's extents until either
// is written, as on btrfs and XFS), else a copy of the data extents only
// (SEEK_DATA/SEEK_HOLE, copy_file_range in the kernel), holes left holes.
//
// # Vocabulary
//
//   - Clone: the copy is a new file of its own (its own inode, owner and
//     mode): changing it, its owner or its mode never touches the
//     original. That is what makes it safe to hand to another user (libvirt
//     chowns the files it gives QEMU) where a hard link would not be.
//
// It does not copy ownership, times or extended attributes, and does not
// make the copy durable (no fsync): callers that need that sync the file.
package clonefile
