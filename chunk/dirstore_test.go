package chunk_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/storetest"
)

func TestDirStore(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) chunk.Store {
			s, err := chunk.OpenDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Corrupt: func(t *testing.T, s chunk.Store, id chunk.ID) {
			h := id.String()
			p := filepath.Join(s.(*chunk.DirStore).Dir(), "chunks", h[:2], h)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-1] ^= 1
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
}
