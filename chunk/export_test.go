package chunk

import "os"

// SetPackTarget makes s start a new pack before one grows past n bytes, so
// that tests get several packs out of little data.
func SetPackTarget(s *PackStore, n int64) {
	s.mu.Lock()
	s.target = n
	s.mu.Unlock()
}

// OpenPackStoreReadOnlyWith is OpenPackStoreReadOnly opening packs with open.
func OpenPackStoreReadOnlyWith(dir string, open func(string) (*os.File, error)) (*ReadOnlyPackStore, error) {
	return openPackStoreReadOnly(dir, open)
}

// SetSealMin sets the size from which Compact seals the pack being
// appended to.
func SetSealMin(s *PackStore, n int64) {
	s.mu.Lock()
	s.sealMin = n
	s.mu.Unlock()
}

// WritesDirect reports whether s writes its current pack by direct I/O.
func WritesDirect(s *PackStore) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.direct != nil && !s.noDirect
}
