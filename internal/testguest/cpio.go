package testguest

import (
	"fmt"
	"io"
	"strings"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks an initramfs
// from. It writes entries as given: parents must come before children.
// Ownership is always root, so no privileges are needed to build an
// initramfs with device nodes.
type cpioWriter struct {
	w   io.Writer
	n   int64 // bytes written, for padding
	ino int
	err error
}

// Mode bits of the entries (as in stat(2)).
const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioLink = 0o120000
	cpioChr  = 0o020000
)

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// entry writes one header, name and body. For device nodes, rdev is
// major<<8|minor.
func (c *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, body []byte) error {
	name = strings.TrimPrefix(name, "/")
	c.ino++
	nlink := 1
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(body), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
	c.write(body)
	c.pad()
	return c.err
}

func (c *cpioWriter) Dir(name string) error { return c.entry(name, cpioDir|0o755, 0, 0, nil) }

func (c *cpioWriter) File(name string, perm uint32, body []byte) error {
	return c.entry(name, cpioReg|perm, 0, 0, body)
}

func (c *cpioWriter) Symlink(name, target string) error {
	return c.entry(name, cpioLink|0o777, 0, 0, []byte(target))
}

func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) error {
	return c.entry(name, cpioChr|perm, major, minor, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.ino = -1 // the trailer has inode 0
	return c.entry("TRAILER!!!", 0, 0, 0, nil)
}
