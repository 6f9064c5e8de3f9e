package sync

import (
	"fmt"

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

// decodeOps reads ops from d; lengths are bounded by the frame.
func decodeOps(d *dec) []op {
	n := d.count(2)
	ops := make([]op, 0, n)
	for range n {
		o := op{kind: opKind(d.uvarint())}
		switch o.kind {
		case opKeep, opSkip:
			v := d.uvarint()
			if v == 0 || v > 1<<40 {
				d.fail("bad op count")
			}
			o.n = int(v)
		case opInsert:
			m := d.count(1)
			o.entries = make([]chunk.Entry, 0, m)
			for range m {
				v := d.uvarint()
				x := chunk.Entry{Length: int64(v >> 1), Zero: v&1 == 1}
				if x.Length <= 0 || v>>1 > 1<<62 {
					d.fail("bad entry length")
				}
				if !x.Zero {
					x.ID = d.id()
				}
				o.entries = append(o.entries, x)
			}
		default:
			d.fail("unknown op")
		}
		if d.err != nil {
			return nil
		}
		ops = append(ops, o)
	}
	return ops
}
