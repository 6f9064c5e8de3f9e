package sync

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// TestErrorCodes pins each condition's number on the wire (written out,
// not through the constants: renumbering one must fail here), both ways:
// the code a receiver sends for it, however wrapped, and the condition a
// sender makes of that code.
func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint64
	}{
		{ErrMalformed, 2},
		{ErrVersionMismatch, 3},
		{ErrBadName, 4},
		{ErrBusy, 5},
		{ErrNoSpace, 6},
		{ErrBadChunks, 8},
		{ErrRemoteCancelled, 9},
		{ErrUnknownImage, 10},
		{ErrLimit, 11},
		{ErrStalled, 12},
		{ErrDigestMismatch, 13},
		{ErrResumeRefused, 14},
		{ErrNotCurrent, 15},
		{ErrDamagedStore, 16},
	} {
		if got := codeOf(fmt.Errorf("context: %w", tc.err)); got != tc.code {
			t.Errorf("codeOf(%v) = %d, want %d", tc.err, got, tc.code)
		}
		err := decodeError(encodeUint(tc.code))
		var re *RemoteError
		if !errors.Is(err, tc.err) || !errors.As(err, &re) || re.Code != tc.code {
			t.Errorf("decodeError(code %d) = %v, want a RemoteError matching %v", tc.code, err, tc.err)
		}
	}
	for _, tc := range []struct {
		name string
		err  error
		code uint64
	}{
		{"a full disk", fmt.Errorf("write: %w", syscall.ENOSPC), 6},
		{"a quota", fmt.Errorf("write: %w", syscall.EDQUOT), 6},
		{"anything else", errors.New("boom"), 1},
		{"a damaged store of an old sender", fmt.Errorf("%w: %w", ErrDamagedStore, ErrOldSender), 16},
	} {
		if got := codeOf(tc.err); got != tc.code {
			t.Errorf("codeOf(%s) = %d, want %d", tc.name, got, tc.code)
		}
	}
	for _, code := range []uint64{1, 7, 999} { // internal, retired, unknown
		if err := decodeError(encodeUint(code)); !errors.Is(err, ErrRemoteInternal) {
			t.Errorf("decodeError(code %d) = %v, want ErrRemoteInternal", code, err)
		}
	}
}
