package directio

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Align is the alignment of direct writes, in memory and in the file: a
// page, and at least 4 KiB (the largest logical block of common disks).
var Align = int64(max(os.Getpagesize(), 4096))

// Open opens path for direct writes, or returns nil where the file system
// does not offer them (tmpfs).
func Open(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil
	}
	return f
}

// Bytes returns n bytes whose first one is aligned.
func Bytes(n int) []byte {
	b := make([]byte, n+int(Align))
	skip := int(Align-int64(uintptr(unsafe.Pointer(&b[0])))%Align) % int(Align)
	return b[skip : skip+n : skip+n]
}

// Aligned reports whether p starts on an aligned address.
func Aligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%uintptr(Align) == 0
}

// Blocks returns the whole blocks of a write of n bytes at off, as
// offsets into it: [lo, hi), empty (lo >= hi) when there is none.
func Blocks(off int64, n int) (lo, hi int64) {
	lo = (Align - off%Align) % Align
	hi = (off+int64(n))/Align*Align - off
	return lo, hi
}
