package resume

import (
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenCheckpoint: what Start and StartLibvirt both begin with refuses
// a bad configuration or a missing checkpoint, and opens a good one's
// images.
func TestOpenCheckpoint(t *testing.T) {
	images, _ := fakeCheckpoint(t)
	empty := t.TempDir()
	work := filepath.Join(t.TempDir(), "work")
	for _, c := range []struct {
		name         string
		network      Network
		work, images string
		wantIs       error
		wantAny      bool
	}{
		{name: "default network", work: work, images: images},
		{name: "network on", network: NetworkOn, work: work, images: images},
		{name: "unknown network", network: "bridge", work: work, images: images, wantAny: true},
		{name: "no work directory", images: images, wantAny: true},
		{name: "no manifest", work: work, images: empty, wantIs: ErrNoCheckpoint},
		{name: "no images directory", work: work, images: filepath.Join(empty, "none"), wantIs: os.ErrNotExist},
	} {
		t.Run(c.name, func(t *testing.T) {
			cp, err := openCheckpoint(c.network, c.work, c.images, nil)
			switch {
			case c.wantAny || c.wantIs != nil:
				if err == nil {
					cp.Close()
					t.Fatal("opened, want an error")
				}
				if c.wantIs != nil && !errors.Is(err, c.wantIs) {
					t.Fatalf("error %v, want %v", err, c.wantIs)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			defer cp.Close()
			if want := cmp.Or(c.network, NetworkOff); cp.network != want {
				t.Errorf("network %q, want %q", cp.network, want)
			}
			if cp.work != work || !filepath.IsAbs(cp.images) || cp.m == nil || cp.stream == nil ||
				len(cp.disks) != len(cp.m.Disks) || len(cp.src.files) != len(cp.m.RAM) {
				t.Errorf("opened %+v", cp)
			}
		})
	}
}
