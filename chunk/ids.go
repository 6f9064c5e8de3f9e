package chunk

// IDs returns the chunks the indexes' data entries use, each once, in the
// order they first appear: what to fetch ahead of writing the images.
func IDs(idx ...*Index) []ID {
	seen := map[ID]struct{}{}
	var ids []ID
	for _, x := range idx {
		for _, e := range x.Entries {
			if e.Zero {
				continue
			}
			if _, ok := seen[e.ID]; !ok {
				seen[e.ID] = struct{}{}
				ids = append(ids, e.ID)
			}
		}
	}
	return ids
}
