package sync

import (
	"errors"
	"fmt"
)

const maxName = 128

// ErrBadName reports a set or image name that could escape its directory or
// is otherwise unusable as a file name.
var ErrBadName = errors.New("bad name")

// CheckName accepts names of 1 to 128 letters, digits, '.', '_', '-' and
// '+', not starting with '.': no path separators, no "..".
func CheckName(s string) error {
	if s == "" || len(s) > maxName {
		return fmt.Errorf("%w %q: want 1 to %d characters", ErrBadName, s, maxName)
	}
	if s[0] == '.' {
		return fmt.Errorf("%w %q: must not start with '.'", ErrBadName, s)
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+'
		if !ok {
			return fmt.Errorf("%w %q: only letters, digits, '.', '_', '-' and '+' are allowed", ErrBadName, s)
		}
	}
	return nil
}
