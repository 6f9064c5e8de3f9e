package sync

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ntc-project/ntc/transport"
)

// stallStream sets a deadline before every read and write of a stream: a
// peer that sends nothing the receiver waits for, or reads nothing it is
// sent, for d ends the push with ErrStalled.
type stallStream struct {
	st *transport.Stream
	d  time.Duration
}

func (s stallStream) Read(p []byte) (int, error) {
	s.st.SetReadDeadline(time.Now().Add(s.d))
	n, err := s.st.Read(p)
	return n, s.stalled(err)
}

func (s stallStream) Write(p []byte) (int, error) {
	s.st.SetWriteDeadline(time.Now().Add(s.d))
	n, err := s.st.Write(p)
	return n, s.stalled(err)
}

func (s stallStream) stalled(err error) error {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return fmt.Errorf("%w: nothing for %s", ErrStalled, s.d)
	}
	return err
}
