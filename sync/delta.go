package sync

import (
	"fmt"
	"unsafe"

	"github.com/ntc-project/ntc/chunk"
)

// An op edits the base image's entry list into the new one. Entries are
// equal only when offset, length and content all are, so an unchanged image
// is a single keep, whatever its size.
type op struct {
	kind    opKind
	n       int           // keep, skip: how many base entries
	entries []chunk.Entry // insert: new entries (offsets implied)
}

type opKind uint8

const (
	opKeep   opKind = 0 // copy the next n base entries
	opSkip   opKind = 1 // drop the next n base entries
	opInsert opKind = 2 // add entries
)

// makeDelta expresses next as edits of base. Both lists are in offset order
// and each covers its image without gaps.
func makeDelta(base, next []chunk.Entry) []op {
	var ops []op
	add := func(k opKind, e *chunk.Entry) {
		if n := len(ops); n > 0 && ops[n-1].kind == k {
			if k == opInsert {
				ops[n-1].entries = append(ops[n-1].entries, *e)
			} else {
				ops[n-1].n++
			}
			return
		}
		o := op{kind: k, n: 1}
		if k == opInsert {
			o.n, o.entries = 0, []chunk.Entry{*e}
		}
		ops = append(ops, o)
	}
	i, j := 0, 0
	for j < len(next) {
		switch {
		case i < len(base) && base[i] == next[j]:
			add(opKeep, nil)
			i++
			j++
		case i < len(base) && base[i].Offset < next[j].Offset:
			add(opSkip, nil)
			i++
		case i < len(base) && base[i].Offset == next[j].Offset:
			add(opSkip, nil)
			add(opInsert, &next[j])
			i++
			j++
		default:
			add(opInsert, &next[j])
			j++
		}
	}
	for ; i < len(base); i++ {
		add(opSkip, nil)
	}
	return ops
}

// applyDelta rebuilds the new entry list from base and ops, checking that
// kept entries fall where they were.
func applyDelta(base []chunk.Entry, ops []op) ([]chunk.Entry, error) {
	var out []chunk.Entry
	i := 0
	pos := int64(0)
	for _, o := range ops {
		switch o.kind {
		case opKeep, opSkip:
			if o.n <= 0 || o.n > len(base)-i {
				return nil, fmt.Errorf("%w: delta %s of %d entries past the base's %d", ErrMalformed, o.kind, o.n, len(base))
			}
			if o.kind == opKeep {
				for _, e := range base[i : i+o.n] {
					if e.Offset != pos {
						return nil, fmt.Errorf("%w: delta keeps an entry at %d where the image is at %d", ErrMalformed, e.Offset, pos)
					}
					out = append(out, e)
					pos += e.Length
				}
			}
			i += o.n
		case opInsert:
			for _, e := range o.entries {
				e.Offset = pos
				out = append(out, e)
				pos += e.Length
			}
		default:
			return nil, fmt.Errorf("%w: unknown delta op %d", ErrMalformed, o.kind)
		}
	}
	if i != len(base) {
		return nil, fmt.Errorf("%w: delta leaves %d base entries unaccounted", ErrMalformed, len(base)-i)
	}
	return out, nil
}

func (k opKind) String() string {
	switch k {
	case opKeep:
		return "keep"
	case opSkip:
		return "skip"
	case opInsert:
		return "insert"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// encodeOps appends ops to e.
func encodeOps(e *enc, ops []op) {
	e.uvarint(uint64(len(ops)))
	for _, o := range ops {
		e.uvarint(uint64(o.kind))
		if o.kind != opInsert {
			e.uvarint(uint64(o.n))
			continue
		}
		e.uvarint(uint64(len(o.entries)))
		for _, x := range o.entries {
			v := uint64(x.Length) << 1
			if x.Zero {
				v |= 1
			}
			e.uvarint(v)
			if !x.Zero {
				e.id(x.ID)
			}
		}
	}
}

// opSink takes ops one at a time as they are decoded: a run of inserted
// entries arrives entry by entry (offsets not set), so decoding allocates
// nothing in proportion to what a frame announces.
type opSink interface {
	keep(n int) error
	skip(n int) error
	insert(e chunk.Entry) error
}

// decodeOpsTo reads ops from d into s; the first error stops it.
func decodeOpsTo(d *dec, s opSink) error {
	n := d.count(2)
	for range n {
		kind := opKind(d.uvarint())
		switch kind {
		case opKeep, opSkip:
			v := d.uvarint()
			if d.err == nil && (v == 0 || v > 1<<40) {
				d.fail("bad op count")
			}
			if d.err != nil {
				return d.err
			}
			var err error
			if kind == opKeep {
				err = s.keep(int(v))
			} else {
				err = s.skip(int(v))
			}
			if err != nil {
				return err
			}
		case opInsert:
			m := d.count(1)
			for range m {
				v := d.uvarint()
				x := chunk.Entry{Length: int64(v >> 1), Zero: v&1 == 1}
				if d.err == nil && (x.Length <= 0 || v>>1 > 1<<62) {
					d.fail("bad entry length")
				}
				if !x.Zero {
					x.ID = d.id()
				}
				if d.err != nil {
					return d.err
				}
				if err := s.insert(x); err != nil {
					return err
				}
			}
		default:
			d.fail("unknown op")
		}
		if d.err != nil {
			return d.err
		}
	}
	return d.err
}

// opList collects decoded ops (tests, and the fuzzer's reference).
type opList []op

func (l *opList) keep(n int) error { *l = append(*l, op{kind: opKeep, n: n}); return nil }
func (l *opList) skip(n int) error { *l = append(*l, op{kind: opSkip, n: n}); return nil }
func (l *opList) insert(e chunk.Entry) error {
	if k := len(*l); k > 0 && (*l)[k-1].kind == opInsert {
		(*l)[k-1].entries = append((*l)[k-1].entries, e)
		return nil
	}
	*l = append(*l, op{kind: opInsert, entries: []chunk.Entry{e}})
	return nil
}

// decodeOps reads ops from d into a list.
func decodeOps(d *dec) []op {
	var l opList
	if decodeOpsTo(d, &l) != nil {
		return nil
	}
	return l
}

// imageBuilder rebuilds one image's entries from its base and the ops as
// they arrive: the receiver's applyDelta. It merges runs of zero entries
// (so a peer sending one-byte zero entries makes one entry), refuses
// entries past the image's end, bounds the entries, charges its account
// for them, and reports each data entry it inserts to onInsert (with the
// entry's position in the result).
type imageBuilder struct {
	name     string
	base     []chunk.Entry
	i        int // next base entry
	pos      int64
	size     int64
	maxChunk int64
	max      int
	out      []chunk.Entry
	acct     *account
	onInsert func(e chunk.Entry, at int) error
}

func (b *imageBuilder) keep(n int) error {
	if n > len(b.base)-b.i {
		return fmt.Errorf("%w: image %s: delta keeps %d entries past the base's %d", ErrMalformed, b.name, n, len(b.base))
	}
	for _, e := range b.base[b.i : b.i+n] {
		if e.Offset != b.pos {
			return fmt.Errorf("%w: image %s: delta keeps an entry at %d where the image is at %d", ErrMalformed, b.name, e.Offset, b.pos)
		}
		if err := b.add(e); err != nil {
			return err
		}
	}
	b.i += n
	return nil
}

func (b *imageBuilder) skip(n int) error {
	if n > len(b.base)-b.i {
		return fmt.Errorf("%w: image %s: delta skips %d entries past the base's %d", ErrMalformed, b.name, n, len(b.base))
	}
	b.i += n
	return nil
}

func (b *imageBuilder) insert(e chunk.Entry) error {
	e.Offset = b.pos
	if !e.Zero && e.Length > b.maxChunk {
		return fmt.Errorf("%w: image %s: a %d-byte chunk, over its chunk size", ErrMalformed, b.name, e.Length)
	}
	if k := len(b.out); e.Zero && k > 0 && b.out[k-1].Zero {
		if e.Length > b.size-b.pos {
			return fmt.Errorf("%w: image %s: entries pass its %d bytes", ErrMalformed, b.name, b.size)
		}
		b.out[k-1].Length += e.Length
		b.pos += e.Length
		return nil
	}
	if err := b.add(e); err != nil {
		return err
	}
	if !e.Zero && b.onInsert != nil {
		return b.onInsert(e, len(b.out)-1)
	}
	return nil
}

// entrySize is what one entry of a rebuilt list takes in memory.
const entrySize = int64(unsafe.Sizeof(chunk.Entry{}))

func (b *imageBuilder) add(e chunk.Entry) error {
	if e.Length > b.size-b.pos {
		return fmt.Errorf("%w: image %s: entries pass its %d bytes", ErrMalformed, b.name, b.size)
	}
	if len(b.out) == cap(b.out) {
		if len(b.out) >= b.max {
			return fmt.Errorf("%w: image %s has more than %d entries", ErrLimit, b.name, b.max)
		}
		n := min(max(2*cap(b.out), 1024), b.max)
		if err := b.acct.reserve(int64(n-cap(b.out))*entrySize, "the entries of image "+b.name); err != nil {
			return err
		}
		out := make([]chunk.Entry, len(b.out), n)
		copy(out, b.out)
		b.out = out
	}
	b.out = append(b.out, e)
	b.pos += e.Length
	return nil
}

// finish checks that the ops covered the base and the image.
func (b *imageBuilder) finish() error {
	if b.i != len(b.base) {
		return fmt.Errorf("%w: image %s: delta leaves %d base entries unaccounted", ErrMalformed, b.name, len(b.base)-b.i)
	}
	if b.pos != b.size {
		return fmt.Errorf("%w: image %s: entries cover %d of its %d bytes", ErrMalformed, b.name, b.pos, b.size)
	}
	return nil
}
