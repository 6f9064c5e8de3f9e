package sync

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/ntc-project/ntc/transport"
)

// Sync error codes, sent in error frames on the control stream: all of
// them, here. They are part of the protocol: add, never renumber
// (TestErrorCodes pins them). Only codes cross the wire, never text: each
// side words the error itself.
const (
	codeInternal      = 1
	codeMalformed     = 2
	codeVersion       = 3
	codeBadName       = 4
	codeBusy          = 5
	codeNoSpace       = 6
	_                 = 7 // was "conflict": offers against another base are now skipped
	codeBadChunks     = 8
	codeCancelled     = 9
	codeUnknownImg    = 10
	codeLimit         = 11
	codeStalled       = 12
	codeDigest        = 13
	codeResumeRefused = 14 // a hand-off (handoff.go)
	codeNotCurrent    = 15 // a hand-off
	codeDamagedStore  = 16 // a heal that could not be done (heal.go)
)

// Conditions a push can end with; match them with errors.Is. They say
// what happened; what to do about it is the caller's to say.
var (
	ErrRemoteInternal = errors.New("the receiver failed")
	// ErrVersionMismatch: the peer speaks another sync protocol version.
	// It matches transport.ErrVersionMismatch too: one condition, whichever
	// layer found it.
	ErrVersionMismatch = fmt.Errorf("the other side speaks another sync protocol version: %w", transport.ErrVersionMismatch)
	ErrDigestMismatch  = errors.New("the version's content does not match the digest it was offered under")
	ErrBusy            = errors.New("another push of this set is in progress on the receiver")
	// ErrNoSpace: the receiver's disk is full; its previous version is
	// intact.
	ErrNoSpace         = errors.New("the receiver's disk is full (its previous version is intact)")
	ErrBadChunks       = errors.New("chunks kept arriving damaged")
	ErrRemoteCancelled = errors.New("the other side stopped")
	ErrUnknownImage    = errors.New("asked for an image the receiver does not hold")
)

var codes = [...]struct {
	code uint64
	err  error
}{
	{codeMalformed, ErrMalformed},
	{codeVersion, ErrVersionMismatch},
	{codeBadName, ErrBadName},
	{codeBusy, ErrBusy},
	{codeNoSpace, ErrNoSpace},
	{codeBadChunks, ErrBadChunks},
	{codeCancelled, ErrRemoteCancelled},
	{codeUnknownImg, ErrUnknownImage},
	{codeLimit, ErrLimit},
	{codeStalled, ErrStalled},
	{codeDigest, ErrDigestMismatch},
	{codeResumeRefused, ErrResumeRefused},
	{codeNotCurrent, ErrNotCurrent},
	{codeDamagedStore, ErrDamagedStore},
}

// codeOf maps a local error to the code sent to the peer.
func codeOf(err error) uint64 {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return codeNoSpace
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return codeInternal
}

// decodeError turns a received error frame into the local condition.
func decodeError(p []byte) error {
	c, err := decodeUint(p)
	if err != nil {
		return err
	}
	for _, x := range codes {
		if x.code == c {
			return &RemoteError{Code: c, err: x.err}
		}
	}
	return &RemoteError{Code: c, err: ErrRemoteInternal}
}

// RemoteError is an error the peer reported.
type RemoteError struct {
	Code uint64
	err  error
}

func (e *RemoteError) Error() string { return fmt.Sprintf("peer reported: %v", e.err) }
func (e *RemoteError) Unwrap() error { return e.err }
