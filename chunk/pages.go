package chunk

import (
	"fmt"

	"github.com/ntc-project/ntc/internal/zero"
)

// PageIndex builds the page index of an image whose 4 KiB pages arrive in
// any order, as they do in a QEMU migration stream. Pages never set read as
// zero. The result equals Build with Pages() of the assembled image.
type PageIndex struct {
	size int64
	ids  []ID
	set  []bool // set[i]: page i holds non-zero content
}

// NewPageIndex prepares the index of an image of size bytes.
func NewPageIndex(size int64) *PageIndex {
	n := (size + BlockSize - 1) / BlockSize
	return &PageIndex{size: size, ids: make([]ID, n), set: make([]bool, n)}
}

// Set records the content of the page at off (a multiple of 4096); data
// may be shorter than a page only for the image's last page. It returns the
// page's entry, zero when the page is all zero. Set is not safe for
// concurrent use.
func (p *PageIndex) Set(off int64, data []byte) (Entry, error) {
	if off < 0 || off%BlockSize != 0 || off >= p.size {
		return Entry{}, fmt.Errorf("page at %#x: outside the %d-byte image or not page-aligned", off, p.size)
	}
	want := min(int64(BlockSize), p.size-off)
	if int64(len(data)) != want {
		return Entry{}, fmt.Errorf("page at %#x: %d bytes, want %d", off, len(data), want)
	}
	i := off / BlockSize
	e := Entry{Offset: off, Length: want}
	if zero.Is(data) {
		p.set[i], p.ids[i] = false, ID{}
		e.Zero = true
		return e, nil
	}
	e.ID = Sum(data)
	p.set[i], p.ids[i] = true, e.ID
	return e, nil
}

// SetZero records that the page at off reads as zeros.
func (p *PageIndex) SetZero(off int64) error {
	if off < 0 || off%BlockSize != 0 || off >= p.size {
		return fmt.Errorf("page at %#x: outside the %d-byte image or not page-aligned", off, p.size)
	}
	p.set[off/BlockSize] = false
	p.ids[off/BlockSize] = ID{}
	return nil
}

// Index returns the index of the pages set so far.
func (p *PageIndex) Index() *Index {
	x := &Index{Params: Pages(), Size: p.size}
	for i := range p.ids {
		off := int64(i) * BlockSize
		n := min(int64(BlockSize), p.size-off)
		if !p.set[i] {
			if k := len(x.Entries); k > 0 && x.Entries[k-1].Zero {
				x.Entries[k-1].Length += n
				continue
			}
			x.Entries = append(x.Entries, Entry{Offset: off, Length: n, Zero: true})
			continue
		}
		x.Entries = append(x.Entries, Entry{Offset: off, Length: n, ID: p.ids[i]})
	}
	return x
}
