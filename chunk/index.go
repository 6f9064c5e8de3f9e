package chunk

import (
	"fmt"
	"sort"
)

// Entry is one piece of an image: a chunk, or a run of zero bytes.
type Entry struct {
	Offset int64
	Length int64
	// ID names the chunk's content; it is the zero ID for a Zero entry.
	ID ID
	// Zero marks a run of zero bytes: nothing is stored or sent for it.
	Zero bool
}

// End returns the offset just past e.
func (e Entry) End() int64 { return e.Offset + e.Length }

// Index lists the entries that make up an image, in order, without gaps.
type Index struct {
	Params  Params
	Size    int64
	Entries []Entry
}

// Stats counts an index's content.
type Stats struct {
	Entries    int   `json:"entries"`
	Chunks     int   `json:"chunks"`
	ZeroBytes  int64 `json:"zero_bytes"`
	DataBytes  int64 `json:"data_bytes"`
	UniqueIDs  int   `json:"unique_chunks"`
	UniqueData int64 `json:"unique_bytes"`
}

// Stats counts the index's chunks, zero bytes and distinct content.
func (x *Index) Stats() Stats {
	var s Stats
	seen := make(map[ID]struct{}, len(x.Entries))
	for _, e := range x.Entries {
		s.Entries++
		if e.Zero {
			s.ZeroBytes += e.Length
			continue
		}
		s.Chunks++
		s.DataBytes += e.Length
		if _, ok := seen[e.ID]; !ok {
			seen[e.ID] = struct{}{}
			s.UniqueIDs++
			s.UniqueData += e.Length
		}
	}
	return s
}

// Find returns the index of the entry containing offset off, or len(Entries)
// when off is at or past the end.
func (x *Index) Find(off int64) int {
	return sort.Search(len(x.Entries), func(i int) bool { return x.Entries[i].End() > off })
}

// Check verifies the structural invariants of the index: entries in order,
// without gaps or overlaps, covering exactly [0, Size), chunk lengths within
// the parameters' bounds, and zero entries carrying no ID.
func (x *Index) Check() error {
	if err := x.Params.Validate(); err != nil {
		return err
	}
	if x.Size < 0 {
		return fmt.Errorf("%w: negative image size %d", ErrCorruptIndex, x.Size)
	}
	pos := int64(0)
	for i, e := range x.Entries {
		if e.Offset != pos {
			return fmt.Errorf("%w: entry %d starts at %d, want %d", ErrCorruptIndex, i, e.Offset, pos)
		}
		if e.Length <= 0 {
			return fmt.Errorf("%w: entry %d has length %d", ErrCorruptIndex, i, e.Length)
		}
		if !e.Zero && e.Length > int64(x.Params.MaxSize) {
			return fmt.Errorf("%w: chunk %d is %d bytes, over the maximum %d", ErrCorruptIndex, i, e.Length, x.Params.MaxSize)
		}
		if e.Zero && e.ID != (ID{}) {
			return fmt.Errorf("%w: zero entry %d carries an ID", ErrCorruptIndex, i)
		}
		pos += e.Length
	}
	if pos != x.Size {
		return fmt.Errorf("%w: entries cover %d bytes, image has %d", ErrCorruptIndex, pos, x.Size)
	}
	return nil
}

// Diff compares two indexes of the same parameters: what the newer one needs
// that the older does not hold.
type Diff struct {
	NewChunks    int   `json:"new_chunks"`
	NewBytes     int64 `json:"new_bytes"`
	ReusedChunks int   `json:"reused_chunks"`
	ReusedBytes  int64 `json:"reused_bytes"`
	ZeroBytes    int64 `json:"zero_bytes"`
	// ChangedBytes is the length of the entries that differ from the entry
	// at the same offset in the old index.
	ChangedBytes int64 `json:"changed_bytes"`
}

// ErrParamsMismatch reports two indexes cut with different parameters.
var ErrParamsMismatch = fmt.Errorf("indexes were cut with different parameters")

// Compare reports what next needs beyond the chunks prev holds. A chunk that
// occurs several times in next counts as new once.
func Compare(prev, next *Index) (Diff, error) {
	if prev.Params != next.Params {
		return Diff{}, fmt.Errorf("%w: %v and %v: re-index one with the other's parameters", ErrParamsMismatch, prev.Params, next.Params)
	}
	have := make(map[ID]struct{}, len(prev.Entries))
	for _, e := range prev.Entries {
		if !e.Zero {
			have[e.ID] = struct{}{}
		}
	}
	var d Diff
	j := 0
	for _, e := range next.Entries {
		for j < len(prev.Entries) && prev.Entries[j].Offset < e.Offset {
			j++
		}
		if j >= len(prev.Entries) || prev.Entries[j] != e {
			d.ChangedBytes += e.Length
		}
		if e.Zero {
			d.ZeroBytes += e.Length
			continue
		}
		if _, ok := have[e.ID]; ok {
			d.ReusedChunks++
			d.ReusedBytes += e.Length
			continue
		}
		have[e.ID] = struct{}{}
		d.NewChunks++
		d.NewBytes += e.Length
	}
	return d, nil
}

// MergeZeroRuns returns x with every run of adjacent zero entries merged
// into one, or x itself when it has no such run. A receiver stores indexes
// in this form, so senders offer them in it.
func (x *Index) MergeZeroRuns() *Index {
	run := false
	for i := 1; i < len(x.Entries) && !run; i++ {
		run = x.Entries[i].Zero && x.Entries[i-1].Zero
	}
	if !run {
		return x
	}
	y := &Index{Params: x.Params, Size: x.Size, Entries: make([]Entry, 0, len(x.Entries))}
	for _, e := range x.Entries {
		if k := len(y.Entries); k > 0 && e.Zero && y.Entries[k-1].Zero {
			y.Entries[k-1].Length += e.Length
			continue
		}
		y.Entries = append(y.Entries, e)
	}
	return y
}
