package sync

import "github.com/ntc-project/ntc/repo"

// maxName bounds a name read from the wire.
const maxName = repo.MaxName

// ErrBadName reports a set or image name that could escape its directory or
// is otherwise unusable as a file name (repo.ErrBadName).
var ErrBadName = repo.ErrBadName

// CheckName accepts names of 1 to 128 letters, digits, '.', '_', '-' and
// '+', not starting with '.': no path separators, no "..". It is
// repo.CheckName: one rule for every name that becomes a file name.
func CheckName(s string) error { return repo.CheckName(s) }
