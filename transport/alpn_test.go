package transport

import (
	"errors"
	"testing"
)

// TestVersionMismatch dials with another ALPN than the listener's, as a
// node of another protocol version would.
func TestVersionMismatch(t *testing.T) {
	cid, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	sid, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", sid, AllowIDs(cid.ID()), Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	tlsConf := clientTLS(cid, sid.ID())
	tlsConf.NextProtos = []string{"ntc/0"}
	c, err := dial(t.Context(), l.Addr().String(), tlsConf, nil, Config{}, sid.ID())
	if err == nil {
		_ = c.Close()
		t.Fatal("dial with another ALPN succeeded")
	}
	if !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("got %v, want ErrVersionMismatch", err)
	}
}
