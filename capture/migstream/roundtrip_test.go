package migstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"testing/iotest"
)

// qemuLikeBlocks mirrors the blocks of `-machine pc -m 1 -device VGA`,
// shrunk.
func qemuLikeBlocks() []Block {
	return []Block{
		{Name: "pc.ram", Length: 64 << 10},
		{Name: "/rom@etc/acpi/tables", Length: 16 << 10},
		{Name: "pc.bios", Length: 32 << 10},
		{Name: "vga.vram", Length: 16 << 10},
		{Name: "0000:00:02.0/vga.rom", Length: 8 << 10},
		{Name: "/rom@etc/acpi/rsdp", Length: 4 << 10},
	}
}

// classicLayout sends the blocks like a classic migration: pages split over
// two PART sections, the second starting with a CONTINUE record, then an END
// section that sends one page again.
func classicLayout(s *Stream) Layout {
	ps := s.PageSize()
	l := Layout{Sections: []Section{{Type: SectionStart}, {Type: SectionPart}, {Type: SectionPart}, {Type: SectionEnd}}}
	half := s.Blocks[0].Length / ps / 2
	l.Sections[1].Runs = []Run{{Block: 0, Page: 0, Count: half, Named: true}}
	l.Sections[2].Runs = []Run{{Block: 0, Page: half, Count: s.Blocks[0].Length/ps - half}}
	for i := 1; i < len(s.Blocks); i++ {
		l.Sections[2].Runs = append(l.Sections[2].Runs, Run{Block: i, Count: s.Blocks[i].Length / ps, Named: true})
	}
	l.Sections[3].Runs = []Run{{Block: 0, Page: 3, Count: 1, Named: true}}
	return l
}

func TestRoundTrip(t *testing.T) {
	cfg := &Config{Machine: "pc-i440fx-7.2"}
	tests := []struct {
		name  string
		synth synth
		stats Stats
	}{
		{
			name:  "canonical",
			synth: synth{config: cfg, blocks: qemuLikeBlocks(), footers: true},
			stats: Stats{Pages: 20, Zeros: 15},
		},
		{
			name:  "no configuration, no footers",
			synth: synth{blocks: qemuLikeBlocks()[:2]},
			stats: Stats{Pages: 12, Zeros: 8},
		},
		{
			name:  "classic sections with a resent page",
			synth: synth{config: cfg, blocks: qemuLikeBlocks(), footers: true, layout: classicLayout},
			stats: Stats{Pages: 20, Zeros: 16, Resent: 1},
		},
		{
			name: "zero page sent as PAGE",
			synth: synth{config: cfg, blocks: qemuLikeBlocks()[:1], footers: true, layout: func(s *Stream) Layout {
				return Layout{Sections: []Section{{Type: SectionStart}, {Type: SectionPart, Runs: []Run{
					{Block: 0, Page: 0, Count: 3, Named: true},
					{Block: 0, Page: 3, Count: 1, ForcePage: true}, // page 3 is zero
					{Block: 0, Page: 4, Count: 12},
				}}}}
			}},
			stats: Stats{Pages: 11, Zeros: 5},
		},
		{
			name: "pages out of order and unsent",
			synth: synth{config: cfg, blocks: qemuLikeBlocks()[:2], footers: true,
				fill: func(b, page int, p []byte) {
					if b == 1 && page >= 2 {
						return // unsent pages read as zero
					}
					p[page%len(p)] = byte(b + 1)
				},
				layout: func(s *Stream) Layout {
					return Layout{Sections: []Section{{Type: SectionStart}, {Type: SectionPart, Runs: []Run{
						{Block: 0, Page: 9, Count: 7, Named: true},
						{Block: 1, Page: 0, Count: 2, Named: true},
						{Block: 0, Page: 0, Count: 9, Named: true},
					}}}}
				}},
			stats: Stats{Pages: 18, Unsent: 2},
		},
		{
			name: "every configuration subsection, 16 KiB pages, shared blocks",
			synth: synth{
				config: &Config{Machine: "virt-7.2", PageBits: 14, Capabilities: []string{capIgnoreShared},
					UUID: []byte("0123456789abcdef")},
				blocks:  []Block{{Name: "mach-virt.ram", Length: 256 << 10, Addr: 0x40000000}, {Name: "shared", Length: 64 << 10}},
				footers: true,
			},
			stats: Stats{Pages: 12, Zeros: 8},
		},
		{
			name:  "1 KiB pages",
			synth: synth{config: &Config{Machine: "m", PageBits: 10}, blocks: []Block{{Name: "ram", Length: 8 << 10}}},
			stats: Stats{Pages: 5, Zeros: 3},
		},
		{
			name:  "empty block before a full one",
			synth: synth{config: cfg, blocks: []Block{{Name: "empty", Length: 0}, {Name: "pc.ram", Length: 8 << 10}}},
			stats: Stats{Pages: 1, Zeros: 1},
		},
		{
			name:  "START without blocks",
			synth: synth{config: cfg, footers: true},
		},
		{
			name:  "no RAM at all",
			synth: synth{config: cfg, layout: func(*Stream) Layout { return Layout{} }},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, imgs := tt.synth.build(t)
			if len(want.Layout.Sections) == 0 {
				want.RAM = RAMHeader{}
			}
			data := joinBytes(t, want, memSource(imgs))
			got, gotImgs := parseBytes(t, data)
			if got.Stats != tt.stats {
				t.Errorf("stats %+v, want %+v", got.Stats, tt.stats)
			}
			got.Stats = Stats{}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(Join(s)) =\n%+v\nwant\n%+v", got, want)
			}
			if !equalImages(gotImgs, imgs) {
				t.Error("images differ after the round trip")
			}
			again := joinBytes(t, got, memSource(gotImgs))
			if !bytes.Equal(again, data) {
				t.Error("Join(Parse(x)) differs from x")
			}
		})
	}
}

// A stream read a byte at a time, or with data and EOF together, parses the
// same.
func TestParseReaders(t *testing.T) {
	s, imgs := synth{config: &Config{Machine: "pc-i440fx-7.2"}, blocks: qemuLikeBlocks(), footers: true, layout: classicLayout}.build(t)
	data := joinBytes(t, s, memSource(imgs))
	want, wantImgs := parseBytes(t, data)
	for name, r := range map[string]io.Reader{
		"one byte": iotest.OneByteReader(bytes.NewReader(data)),
		"data+EOF": iotest.DataErrReader(bytes.NewReader(data)),
		"half":     iotest.HalfReader(bytes.NewReader(data)),
	} {
		t.Run(name, func(t *testing.T) {
			imgs := memImages{}
			got, err := Parse(t.Context(), r, imgs)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) || !equalImages(imgs, wantImgs) {
				t.Error("result differs from reading the whole stream")
			}
		})
	}
}

func TestDirSinkSource(t *testing.T) {
	s, imgs := synth{config: &Config{Machine: "pc-i440fx-7.2"}, blocks: qemuLikeBlocks(), footers: true}.build(t)
	data := joinBytes(t, s, memSource(imgs))
	dir := t.TempDir()
	sink := NewDirSink(dir)
	got, err := Parse(t.Context(), bytes.NewReader(data), sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "%2From@etc%2Facpi%2Ftables.img")); err != nil {
		t.Errorf("image file of /rom@etc/acpi/tables: %v", err)
	}
	src := NewDirSource(dir)
	defer func() {
		if err := src.Close(); err != nil {
			t.Error(err)
		}
	}()
	var out bytes.Buffer
	if err := Join(t.Context(), &out, got, src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Error("Join from DirSource differs from the stream parsed into DirSink")
	}
}

// A page written and then sent as ZERO must read back as zero; a zero page
// that was never written costs no write.
func TestDirSinkZeroAfterData(t *testing.T) {
	dir := t.TempDir()
	sink := NewDirSink(dir)
	w, err := sink.Block("pc.ram", 4*granule)
	if err != nil {
		t.Fatal(err)
	}
	zw := w.(ZeroWriterAt)
	page := bytes.Repeat([]byte{0xab}, granule)
	for _, step := range []func() error{
		func() error { _, err := w.WriteAt(page, granule); return err },
		func() error { _, err := w.WriteAt(page, 2*granule); return err },
		func() error { return zw.WriteZeroAt(granule, granule) },
		func() error { return zw.WriteZeroAt(2*granule+1024, 1024) }, // part of a granule
		func() error { return zw.WriteZeroAt(3*granule, granule) },   // never written
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, ImageFileName("pc.ram")))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4*granule)
	copy(want[2*granule:], page)
	clear(want[2*granule+1024 : 2*granule+2048])
	if !bytes.Equal(got, want) {
		t.Error("image content wrong after zeroing written pages")
	}
}

func TestCancel(t *testing.T) {
	s, imgs := synth{blocks: []Block{{Name: "pc.ram", Length: 64 << 20}}, fill: func(int, int, []byte) {}}.build(t)
	data := joinBytes(t, s, memSource(imgs))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Parse(ctx, bytes.NewReader(data), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Parse with a cancelled context: %v", err)
	}
	if err := Join(ctx, io.Discard, s, memSource(imgs)); !errors.Is(err, context.Canceled) {
		t.Errorf("Join with a cancelled context: %v", err)
	}
}
