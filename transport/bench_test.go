package transport_test

import (
	"testing"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// BenchmarkStreamThroughput moves data over one stream on loopback with the
// default Config: the baseline for what sync achieves on the same path.
//
//	go test -run x -bench StreamThroughput -benchtime 3x ./transport/
func BenchmarkStreamThroughput(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int64
	}{
		{"1MiB", 1 << 20},
		{"64MiB", 64 << 20},
	} {
		b.Run(size.name, func(b *testing.B) {
			client, server := transporttest.Pair(b, transport.Config{})
			transporttest.StreamThroughput(b, client, server, size.bytes)
		})
	}
}
