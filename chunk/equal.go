package chunk

import "slices"

// Equal reports whether x and y describe the same image the same way: the
// same parameters, size and entries. An incremental re-index (Reindex)
// and a full one (Build) of the same bytes are Equal.
func (x *Index) Equal(y *Index) bool {
	return x.Params == y.Params && x.Size == y.Size && slices.Equal(x.Entries, y.Entries)
}
