package capture

import (
	"strings"
	"testing"

	"github.com/ntc-project/ntc/repo"
)

// TestImageName: QEMU's names become image names a manifest accepts,
// distinct within a checkpoint, with room for ".idx" however long.
func TestImageName(t *testing.T) {
	long := strings.Repeat("x", repo.MaxName)
	used := map[string]bool{}
	for _, tc := range []struct{ prefix, qemu, want string }{
		{"disk-", "virtio-disk0", "disk-virtio-disk0"},
		{"ram-", "pc.ram", "ram-pc.ram"},
		{"ram-", "/rom@etc/acpi/tables", "ram-_rom_etc_acpi_tables"},
		{"ram-", "_rom@etc_acpi/tables", "ram-_rom_etc_acpi_tables-2"}, // the same once made safe
		{"disk-", "", "disk-_"},
		{"disk-", long, ("disk-" + long)[:repo.MaxName-len(".idx")]},
		{"disk-", long + "y", ("disk-" + long)[:repo.MaxName-len(".idx")-2] + "-2"},
	} {
		got := imageName(used, tc.prefix, tc.qemu)
		if got != tc.want {
			t.Errorf("imageName(%q, %q) = %q, want %q", tc.prefix, tc.qemu, got, tc.want)
		}
		if err := checkIndexName("test", got+".idx"); err != nil {
			t.Errorf("imageName(%q, %q) = %q: %v", tc.prefix, tc.qemu, got, err)
		}
	}
}
