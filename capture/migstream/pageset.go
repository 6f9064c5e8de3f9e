package migstream

// pageSet is a sparse set of page numbers: memory grows with the pages
// added, not with the range they come from.
type pageSet struct {
	chunks map[int64]*[pageSetWords]uint64
	last   int64 // key of lastC
	lastC  *[pageSetWords]uint64
	n      int64 // pages in the set
}

const (
	pageSetWords = 64
	pageSetSpan  = pageSetWords * 64 // pages per chunk
)

// add puts page in the set and reports whether it was there already.
func (s *pageSet) add(page int64) bool {
	key := page / pageSetSpan
	c := s.lastC
	if c == nil || key != s.last {
		if s.chunks == nil {
			s.chunks = make(map[int64]*[pageSetWords]uint64)
		}
		c = s.chunks[key]
		if c == nil {
			c = new([pageSetWords]uint64)
			s.chunks[key] = c
		}
		s.last, s.lastC = key, c
	}
	i := page % pageSetSpan
	w, bit := &c[i/64], uint64(1)<<(i%64)
	if *w&bit != 0 {
		return true
	}
	*w |= bit
	s.n++
	return false
}

// has reports whether page is in the set.
func (s *pageSet) has(page int64) bool {
	c := s.chunks[page/pageSetSpan]
	if c == nil {
		return false
	}
	i := page % pageSetSpan
	return c[i/64]&(uint64(1)<<(i%64)) != 0
}

// remove takes page out of the set.
func (s *pageSet) remove(page int64) {
	c := s.chunks[page/pageSetSpan]
	if c == nil {
		return
	}
	i := page % pageSetSpan
	w, bit := &c[i/64], uint64(1)<<(i%64)
	if *w&bit != 0 {
		*w &^= bit
		s.n--
	}
}
