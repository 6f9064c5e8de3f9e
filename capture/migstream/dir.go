package migstream

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
)

// ImageFileName is the file name under which DirSink stores a block's image:
// the name, path-escaped so that "/rom@etc/acpi/tables" stays one file, plus
// ".img".
func ImageFileName(block string) string {
	return url.PathEscape(block) + ".img"
}

// DirSink writes each block's image to a sparse file in a directory. Zero
// pages leave holes; a page written and later zeroed is overwritten.
type DirSink struct {
	dir   string
	files []*fileImage
}

var _ Sink = (*DirSink)(nil)

// NewDirSink returns a sink that writes into dir, which must exist. Files of
// the same name are replaced.
func NewDirSink(dir string) *DirSink { return &DirSink{dir: dir} }

// Block creates the block's image file, length bytes of holes.
func (d *DirSink) Block(name string, length int64) (io.WriterAt, error) {
	path := filepath.Join(d.dir, ImageFileName(name))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	img := &fileImage{f: f}
	d.files = append(d.files, img)
	if err := f.Truncate(length); err != nil {
		return nil, fmt.Errorf("size %s: %w", path, err)
	}
	return img, nil
}

// Close closes every file Block created and reports the first error.
func (d *DirSink) Close() error {
	var errs []error
	for _, img := range d.files {
		errs = append(errs, img.f.Close())
	}
	d.files = nil
	return errors.Join(errs...)
}

// fileImage is a freshly truncated file that remembers which 4 KiB granules
// hold data, so that zero pages only cost a write where data was.
type fileImage struct {
	f    *os.File
	data pageSet
}

const granule = 4096

var _ ZeroWriterAt = (*fileImage)(nil)

func (img *fileImage) WriteAt(p []byte, off int64) (int, error) {
	for g := off / granule; g*granule < off+int64(len(p)); g++ {
		img.data.add(g)
	}
	return img.f.WriteAt(p, off)
}

func (img *fileImage) WriteZeroAt(off, n int64) error {
	for g := off / granule; g*granule < off+n; g++ {
		if !img.data.has(g) {
			continue
		}
		// Zero the whole granule's overlap with [off, off+n).
		lo, hi := max(g*granule, off), min((g+1)*granule, off+n)
		if _, err := img.f.WriteAt(zeroPage[:hi-lo], lo); err != nil {
			return err
		}
		if lo == g*granule && hi == (g+1)*granule {
			img.data.remove(g)
		}
	}
	return nil
}

// DirSource reads the images a DirSink wrote.
type DirSource struct {
	dir   string
	files []*os.File
}

var _ Source = (*DirSource)(nil)

// NewDirSource returns a source that reads from dir.
func NewDirSource(dir string) *DirSource { return &DirSource{dir: dir} }

// Block opens the block's image file and checks that it holds length bytes.
func (d *DirSource) Block(name string, length int64) (io.ReaderAt, error) {
	path := filepath.Join(d.dir, ImageFileName(name))
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	d.files = append(d.files, f)
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < length {
		return nil, fmt.Errorf("%s holds %d bytes, want %d", path, fi.Size(), length)
	}
	return f, nil
}

// Close closes every file Block opened.
func (d *DirSource) Close() error {
	var errs []error
	for _, f := range d.files {
		errs = append(errs, f.Close())
	}
	d.files = nil
	return errors.Join(errs...)
}
