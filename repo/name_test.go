package repo

import (
	"strings"
	"testing"
)

func TestSafeName(t *testing.T) {
	long := strings.Repeat("a", MaxName+5)
	for _, tc := range []struct{ in, want string }{
		{"web-1.2_x+y", "web-1.2_x+y"}, // a good name stays
		{"", "_"},
		{".hidden", "_hidden"},
		{"..", "_."},
		{"a/b", "a_b"},
		{"/rom@etc/acpi/tables", "_rom_etc_acpi_tables"},
		{"0000:00:02.0/vga.vram", "0000_00_02.0_vga.vram"},
		{"disque é", "disque___"}, // each byte of a non-ASCII letter
		{long, long[:MaxName]},
	} {
		got := SafeName(tc.in)
		if got != tc.want {
			t.Errorf("SafeName(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if err := CheckName(got); err != nil {
			t.Errorf("CheckName(SafeName(%q)): %v", tc.in, err)
		}
	}
}

// FuzzSafeName: whatever the input, SafeName makes a name CheckName
// accepts, and leaves one it accepts as it is.
func FuzzSafeName(f *testing.F) {
	for _, s := range []string{"", "web", ".x", "../../etc/passwd", "a\x00b", strings.Repeat("é", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := SafeName(s)
		if err := CheckName(got); err != nil {
			t.Fatalf("CheckName(SafeName(%q) = %q): %v", s, got, err)
		}
		if CheckName(s) == nil && got != s {
			t.Fatalf("SafeName(%q) = %q: changed a good name", s, got)
		}
	})
}
