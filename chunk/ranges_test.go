package chunk

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRanges(t *testing.T) {
	const K, M, G = 1 << 10, 1 << 20, 1 << 30
	for _, tc := range []struct {
		in   string
		want []Range
	}{
		{"", nil},
		{"0-4096", []Range{{0, 4096}}},
		{"1M+64K", []Range{{M, 64 * K}}},
		// The README's and 'ntc index --help's examples.
		{"1G+64K,3G-3G+4K", []Range{{G, 64 * K}, {3 * G, 4 * K}}},
		{"1G+64K,2G-2G+4K", []Range{{G, 64 * K}, {2 * G, 4 * K}}},
		{"5G-6G", []Range{{5 * G, G}}},
		{"1G+4K-1G+8K", []Range{{G + 4*K, 4 * K}}},
		{" 0x1000-8K , 1MiB+1KB ", []Range{{4 * K, 4 * K}, {M, K}}},
		{"4K-4K", []Range{{4 * K, 0}}},
		{"1t+1", []Range{{1 << 40, 1}}},
	} {
		got, err := ParseRanges(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseRanges(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, says string }{
		{"x", "START-END or START+LENGTH"},
		{"4K-0", "END >= START"},
		{"1G-2G-3G", "START-END"},
		{"1G+4K+64K", "START+LENGTH"}, // which is the start? refused
		{"1G++5", "START+LENGTH"},
		{"1G+-5", "START-END"},
		{"-5", "START-END"},
		{"3G-3G+", "START-END"},
		{"2T-4194304T+1", "START-END"}, // beyond 1<<62
		{"4194304T+1", "START+LENGTH"},
		{"0-1Q", "START-END"},
	} {
		got, err := ParseRanges(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParseRanges(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.says)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"4096", 4096}, {"16K", 16 << 10}, {"16k", 16 << 10}, {"2MiB", 2 << 20}, {"3GB", 3 << 30}, {"1T", 1 << 40}, {"0x10", 16},
	} {
		if got, err := ParseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "K", "-1", "+1", "1.5M", "4194305T", "ten"} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d; want an error", bad, got)
		}
	}
}
