// Package zero tells all-zero bytes apart: a disk's holes, a guest's
// untouched pages, which ntc never stores as chunks. It is the one test
// for them (chunk, capture/migstream and bench use it), kept in a package
// of its own so that packages limited to the standard library can use it.
package zero

// block is compared against; nothing writes it.
var block [16 << 10]byte

// Is reports whether b is all zero bytes (an empty b is). It compares b
// with zeros a block at a time, which the runtime does with vector
// instructions: at memory speed (BenchmarkIs).
func Is(b []byte) bool {
	for len(b) > len(block) {
		if string(b[:len(block)]) != string(block[:]) {
			return false
		}
		b = b[len(block):]
	}
	return string(b) == string(block[:len(b)])
}
