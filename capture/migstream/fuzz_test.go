package migstream

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// fuzzSeeds are small valid streams, built by Join from synthetic blocks.
func fuzzSeeds(tb testing.TB) [][]byte {
	cfg := func() *Config { return &Config{Machine: "pc-i440fx-7.2", PageBits: minPageBits} }
	small := []Block{{Name: "pc.ram", Length: 4 << 10}, {Name: "/rom@etc/acpi/rsdp", Length: 1 << 10}}
	tiny := func(_, page int, p []byte) {
		if page != 1 {
			copy(p, "page")
			p[len(p)-1] = byte(page)
		}
	}
	synths := []synth{
		{config: cfg(), blocks: small, footers: true, fill: tiny},
		{config: cfg(), blocks: small, footers: true, fill: tiny, layout: classicLayout},
		{blocks: []Block{{Name: "pc.ram", Length: 8 << 10}}, fill: func(int, int, []byte) {}},
		{config: &Config{Machine: "virt", PageBits: minPageBits, Capabilities: []string{capIgnoreShared}, UUID: make([]byte, 16)},
			blocks: []Block{{Name: "a", Length: 1 << 10, Addr: 1 << 30}, {Name: "b", Length: 3 << 10}}, footers: true, fill: tiny,
			layout: func(s *Stream) Layout {
				return Layout{Sections: []Section{{Type: SectionStart}, {Type: SectionPart, Runs: []Run{
					{Block: 1, Page: 2, Count: 1, Named: true},
					{Block: 1, Page: 1, Count: 1, ForcePage: true},
					{Block: 0, Page: 0, Count: 1, Named: true},
				}}, {Type: SectionEnd, Runs: []Run{{Block: 0, Page: 0, Count: 1, Named: true}}}}}
			}},
		{config: cfg(), layout: func(*Stream) Layout { return Layout{} }},
	}
	var seeds [][]byte
	for _, sy := range synths {
		s, imgs := sy.build(tb)
		if len(s.Layout.Sections) == 0 {
			s.RAM = RAMHeader{}
		}
		seeds = append(seeds, joinBytes(tb, s, memSource(imgs)))
	}
	return seeds
}

// FuzzParse checks that Parse never panics or allocates from a length field,
// that it fails only with a *ParseError, and that what it returns joins back
// into a stream that parses to the same: byte for byte when no page was
// sent twice.
func FuzzParse(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		imgs := memImages{}
		s, err := Parse(t.Context(), bytes.NewReader(data), imgs)
		if err != nil {
			if pe := (*ParseError)(nil); !errors.As(err, &pe) {
				t.Fatalf("error is not a *ParseError: %v", err)
			}
			return
		}
		joined := joinBytes(t, s, memSource(imgs))
		s2, imgs2 := parseBytes(t, joined)
		if !equalImages(imgs2, imgs) {
			t.Fatal("images differ after Join and Parse")
		}
		if s.Stats.Resent == 0 {
			if !bytes.Equal(joined, data) {
				t.Fatalf("Join(Parse(x)) != x at byte %d", firstDiff(joined, data))
			}
			if !reflect.DeepEqual(s2, s) {
				t.Fatalf("Parse(Join(s)) =\n%+v\nwant\n%+v", s2, s)
			}
			return
		}
		// A page sent twice goes out with its last content both times, so
		// the first Join normalises the stream; after it, it is stable.
		if again := joinBytes(t, s2, memSource(imgs2)); !bytes.Equal(again, joined) {
			t.Fatal("Join(Parse(Join(Parse(x)))) != Join(Parse(x))")
		}
	})
}
