package capture

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCheckLayer: a layer ntc cannot read in place is refused as
// unsupported, and one that qemu-img convert would make readable says so
// (ErrLayerNotPlain), so that the command line can suggest it.
func TestCheckLayer(t *testing.T) {
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		file      string
		format    string
		encrypted bool
		notPlain  bool // want ErrLayerNotPlain as well as ErrUnsupported
	}{
		{"vmdk", file, "vmdk", false, true},
		{"encrypted", file, "qcow2", true, false},
		{"missing", file + ".gone", "raw", false, false},
	} {
		err := checkLayer(tc.file, tc.format, tc.encrypted)
		if !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrLayerNotPlain) != tc.notPlain {
			t.Errorf("%s: checkLayer = %v; want ErrUnsupported, ErrLayerNotPlain %v", tc.name, err, tc.notPlain)
		}
	}
	if err := checkLayer(file, "raw", false); err != nil {
		t.Errorf("raw regular file: %v", err)
	}
}
