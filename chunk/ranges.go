package chunk

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Range is a byte range [Off, Off+Len) of an image.
type Range struct {
	Off, Len int64
}

// End returns the offset just past r.
func (r Range) End() int64 { return r.Off + r.Len }

// NormalizeRanges sorts rs, drops empty ranges, clips them to [0, size) and
// merges ranges that overlap or touch.
func NormalizeRanges(rs []Range, size int64) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		if r.Off < 0 {
			r.Len += r.Off
			r.Off = 0
		}
		if r.End() > size {
			r.Len = size - r.Off
		}
		if r.Len > 0 {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Range) int { return cmpInt64(a.Off, b.Off) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.Off <= merged[n-1].End() {
			if r.End() > merged[n-1].End() {
				merged[n-1].Len = r.End() - merged[n-1].Off
			}
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// Complement returns the parts of [0, size) not covered by rs (which must be
// normalized): the changed ranges when rs are the read-only ones.
func Complement(rs []Range, size int64) []Range {
	var out []Range
	pos := int64(0)
	for _, r := range rs {
		if r.Off > pos {
			out = append(out, Range{pos, r.Off - pos})
		}
		pos = max(pos, r.End())
	}
	if pos < size {
		out = append(out, Range{pos, size - pos})
	}
	return out
}

// ParseRanges parses a comma-separated list of ranges, each START-END
// (END exclusive) or START+LENGTH, with optional K, M, G, T suffixes (powers
// of 1024). START and END may be sums of sizes, so that a range can be
// written from where it starts: "0-4096,1M+64K,3G-3G+4K" (the last is
// [3G, 3G+4K)).
func ParseRanges(s string) ([]Range, error) {
	var out []Range
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var r Range
		if a, b, ok := strings.Cut(part, "-"); ok {
			off, err1 := parseSum(a)
			end, err2 := parseSum(b)
			if err1 != nil || err2 != nil || end < off {
				return nil, fmt.Errorf("range %q: want START-END with END >= START, like 0-4096 or 3G-3G+4K", part)
			}
			r = Range{off, end - off}
		} else if a, b, ok := strings.Cut(part, "+"); ok {
			off, err1 := ParseSize(a)
			n, err2 := ParseSize(b)
			if err1 != nil || err2 != nil || off > maxSize-n {
				return nil, fmt.Errorf("range %q: want START+LENGTH like 1M+64K", part)
			}
			r = Range{off, n}
		} else {
			return nil, fmt.Errorf("range %q: want START-END or START+LENGTH", part)
		}
		out = append(out, r)
	}
	return out, nil
}

// maxSize bounds sizes and offsets: 4 EiB, far beyond any image.
const maxSize = 1 << 62

// parseSum parses one size or several joined by "+": "3G+4K".
func parseSum(s string) (int64, error) {
	var sum int64
	for term := range strings.SplitSeq(s, "+") {
		n, err := ParseSize(term)
		if err != nil {
			return 0, err
		}
		if sum > maxSize-n {
			return 0, fmt.Errorf("size %q: larger than %d", s, int64(maxSize))
		}
		sum += n
	}
	return sum, nil
}

// ParseSize parses a byte count with an optional K, M, G or T suffix
// (powers of 1024, an optional trailing "iB" or "B" is accepted).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	u := strings.ToUpper(s)
	u = strings.TrimSuffix(strings.TrimSuffix(u, "B"), "I")
	mult := int64(1)
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			u = u[:n-1]
		}
	}
	// A sign is not part of a size: "+5" and "-5" would make ranges
	// ambiguous.
	signed := u != "" && (u[0] == '+' || u[0] == '-')
	v, err := strconv.ParseInt(u, 0, 64)
	if err != nil || signed || v < 0 || v > maxSize/mult {
		return 0, fmt.Errorf("size %q: want a non-negative number with an optional K, M, G or T suffix", s)
	}
	return v * mult, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func alignDown(x int64) int64 { return x &^ (BlockSize - 1) }
func alignUp(x int64) int64   { return (x + BlockSize - 1) &^ (BlockSize - 1) }
