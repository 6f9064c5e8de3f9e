package migstream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// raw builds streams byte by byte: a header, a configuration section, a RAM
// START section for one 16 KiB block "pc.ram" (section id 2), one PART
// section holding part, then device state and a description.
type raw struct {
	config []byte // replaces the configuration section body
	start  []byte // replaces the RAM START section
	part   []byte // records of the PART section, before its EOS
	tail   []byte // replaces everything after the PART section
}

func (r raw) bytes() []byte {
	b := appendU32(nil, fileMagic)
	b = appendU32(b, fileVersion)
	b = append(b, secConfiguration)
	if r.config != nil {
		b = append(b, r.config...)
	} else {
		b = appendConfig(b, &Config{Machine: "pc-i440fx-7.2"})
	}
	if r.start != nil {
		b = append(b, r.start...)
	} else {
		b = append(b, secStart)
		b = appendU32(b, 2)
		b = appendStr8(b, "ram")
		b = appendU32(b, 0)
		b = appendU32(b, 4)
		b = appendU64(b, 16<<10|flagMemSize)
		b = appendStr8(b, "pc.ram")
		b = appendU64(b, 16<<10)
		b = appendU64(b, flagEOS)
		b = append(b, secFooter)
		b = appendU32(b, 2)
	}
	b = append(b, secPart)
	b = appendU32(b, 2)
	b = append(b, r.part...)
	b = appendU64(b, flagEOS)
	b = append(b, secFooter)
	b = appendU32(b, 2)
	if r.tail != nil {
		return append(b, r.tail...)
	}
	b = append(b, fakeDevices(true)...)
	desc := `{"page_size": 4096}`
	b = append(b, secVMDescription)
	b = appendU32(b, uint32(len(desc)))
	return append(b, desc...)
}

// rec is a RAM record: header, optional block name, then payload.
func rec(addrFlags uint64, name string, payload ...byte) []byte {
	b := appendU64(nil, addrFlags)
	if name != "" {
		b = appendStr8(b, name)
	}
	return append(b, payload...)
}

func page(v byte) []byte { return bytes.Repeat([]byte{v}, 4096) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseErrors(t *testing.T) {
	ram := func(records []byte) []byte { return raw{part: records}.bytes() }
	valid := ram(cat(rec(flagPage, "pc.ram", page(1)...), rec(0x1000|flagZero|flagContinue, "", 0)))
	tests := []struct {
		name   string
		stream []byte
		want   error
		msg    string // part of the message
	}{
		{"empty", nil, ErrTruncated, "header"},
		{"bad magic", append([]byte("QEVN"), valid[4:]...), ErrNotStream, "magic"},
		{"version 2", cat(valid[:4], appendU32(nil, 2), valid[8:]), ErrVersion, "version 2"},
		{"xbzrle", ram(rec(flagXBZRLE, "pc.ram")), ErrUnsupported, "capability xbzrle"},
		{"compress", ram(rec(flagCompressPage, "pc.ram")), ErrUnsupported, "capability compress"},
		{"rdma", ram(rec(flagHook, "")), ErrUnsupported, "RDMA"},
		{"multifd", ram(rec(flagMultifdFlush, "")), ErrUnsupported, "capability multifd"},
		{"unknown flags", ram(rec(0x2000|0x001, "pc.ram")), ErrMalformed, "offset 0x2000: unknown record flags 0x1"},
		{"zero and page", ram(rec(flagZero|flagPage, "pc.ram")), ErrMalformed, "unknown record flags 0xa"},
		{"fill byte", ram(rec(flagZero, "pc.ram", 0xff)), ErrUnsupported, "fill byte 0xff"},
		{"beyond block", ram(rec(0x4000|flagPage, "pc.ram", page(1)...)), ErrMalformed, `block "pc.ram" offset 0x4000: beyond`},
		{"unknown block", ram(rec(flagPage, "pc.rom", page(1)...)), ErrMalformed, `unknown block "pc.rom"`},
		{"continue first", ram(rec(flagPage|flagContinue, "", page(1)...)), ErrMalformed, "CONTINUE record before"},
		{"block list in PART", ram(rec(16<<10|flagMemSize, "")), ErrMalformed, "block list outside"},
		{"EOS with address", ram(rec(0x1000|flagEOS, "")), ErrMalformed, "unknown record flags 0x10"},
		{"truncated page", ram(rec(flagPage, "pc.ram", page(1)...))[:400], ErrTruncated, `block "pc.ram" offset 0x0: page`},
		{"block of 2^40 bytes", raw{start: cat([]byte{secStart}, appendU32(nil, 2), appendStr8(nil, "ram"), appendU32(nil, 0), appendU32(nil, 4),
			appendU64(nil, 1<<40|flagMemSize), appendStr8(nil, "pc.ram"), appendU64(nil, 1<<40))}.bytes(), ErrTooLarge, `block "pc.ram" of 1099511627776 bytes`},
		{"blocks exceed total", raw{start: cat([]byte{secStart}, appendU32(nil, 2), appendStr8(nil, "ram"), appendU32(nil, 0), appendU32(nil, 4),
			appendU64(nil, 0x1000|flagMemSize), appendStr8(nil, "pc.ram"), appendU64(nil, 0x2000))}.bytes(), ErrMalformed, "exceeds"},
		{"unaligned block", raw{start: cat([]byte{secStart}, appendU32(nil, 2), appendStr8(nil, "ram"), appendU32(nil, 0), appendU32(nil, 4),
			appendU64(nil, 0x2000|flagMemSize), appendStr8(nil, "pc.ram"), appendU64(nil, 0x1800))}.bytes(), ErrMalformed, "not a multiple"},
		{"ram version 3", raw{start: cat([]byte{secStart}, appendU32(nil, 2), appendStr8(nil, "ram"), appendU32(nil, 0), appendU32(nil, 3))}.bytes(),
			ErrUnsupported, "ram section version 3"},
		{"block migration", raw{start: cat([]byte{secStart}, appendU32(nil, 1), appendStr8(nil, "block"), appendU32(nil, 0), appendU32(nil, 1))}.bytes(),
			ErrUnsupported, `iterative section "block"`},
		{"postcopy command", raw{start: []byte{secCommand, 0, 1, 0, 0}}.bytes(), ErrUnsupported, "postcopy"},
		{"unknown section", raw{start: []byte{0x42}}.bytes(), ErrMalformed, "section type 0x42"},
		{"PART without START", raw{start: []byte{}}.bytes(), ErrMalformed, "no START section"},
		{"valid", valid, nil, ""},
		{"unknown subsection", raw{config: cat(appendU32(nil, 2), []byte("pc"), []byte{secSubsection}, appendStr8(nil, "configuration/x"), appendU32(nil, 1))}.bytes(),
			ErrUnsupported, `subsection "configuration/x"`},
		{"mapped-ram", raw{config: cat(appendU32(nil, 2), []byte("pc"), []byte{secSubsection}, appendStr8(nil, "configuration/capabilities"), appendU32(nil, 1),
			appendU32(nil, 1), appendStr8(nil, "mapped-ram"))}.bytes(), ErrUnsupported, `capability "mapped-ram"`},
		{"page bits 20", raw{config: cat(appendU32(nil, 2), []byte("pc"), []byte{secSubsection}, appendStr8(nil, "configuration/target-page-bits"), appendU32(nil, 1),
			appendU32(nil, 20))}.bytes(), ErrUnsupported, "target page bits 20"},
		{"no description", raw{tail: fakeDevices(true)}.bytes(), ErrTruncated, "without the VMDESCRIPTION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(t.Context(), bytes.NewReader(tt.stream), nil)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse: %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q lacks %q", err, tt.msg)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Offset < 0 || pe.Offset > int64(len(tt.stream)) {
				t.Errorf("no ParseError with a sane offset: %#v", err)
			}
		})
	}
}

// Footers must name the RAM section.
func TestParseFooterMismatch(t *testing.T) {
	b := raw{part: rec(flagZero, "pc.ram", 0)}.bytes()
	i := bytes.Index(b, cat(appendU64(nil, flagEOS), []byte{secFooter}, appendU32(nil, 2), []byte{secPart}))
	b[i+8+4] = 9 // START footer names section 9
	_, err := Parse(t.Context(), bytes.NewReader(b), nil)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "footer for section id 9") {
		t.Errorf("Parse: %v", err)
	}
}

// Every prefix of a stream is truncated.
func TestParseTruncated(t *testing.T) {
	s, imgs := synth{config: &Config{Machine: "pc-i440fx-7.2"}, blocks: qemuLikeBlocks()[:2], footers: true, layout: classicLayout}.build(t)
	data := joinBytes(t, s, memSource(imgs))
	for n := 0; n < len(data); n += 1 + n/512 {
		_, err := Parse(t.Context(), bytes.NewReader(data[:n]), nil)
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("prefix of %d of %d bytes: %v", n, len(data), err)
		}
	}
}

// The reader's and the sink's errors come back wrapped, not as truncation.
func TestParsePassesErrorsOn(t *testing.T) {
	data := raw{part: rec(flagPage, "pc.ram", page(1)...)}.bytes()
	r := io.MultiReader(bytes.NewReader(data[:200]), iotest.ErrReader(boom))
	if _, err := Parse(t.Context(), r, nil); !errors.Is(err, boom) || errors.Is(err, ErrTruncated) {
		t.Errorf("reader error: %v", err)
	}
	if _, err := Parse(t.Context(), bytes.NewReader(data), failingSink{boom}); !errors.Is(err, boom) {
		t.Errorf("sink error: %v", err)
	}
	if _, err := Parse(t.Context(), bytes.NewReader(data), failingSink{nil}); !errors.Is(err, boom) ||
		!strings.Contains(err.Error(), `block "pc.ram" offset 0x0: write`) {
		t.Errorf("writer error: %v", err)
	}
}

type failingSink struct{ err error }

func (f failingSink) Block(string, int64) (io.WriterAt, error) {
	if f.err != nil {
		return nil, f.err
	}
	return failingWriter{}, nil
}

type failingWriter struct{}

func (failingWriter) WriteAt([]byte, int64) (int, error) { return 0, boom }

var boom = errors.New("boom")

// A page sent twice keeps its last content; Join sends the last content
// both times, which parses back to the same stream.
func TestResentPageKeepsLastContent(t *testing.T) {
	data := raw{part: cat(
		rec(flagPage, "pc.ram", page(1)...),
		rec(0x1000|flagContinue|flagPage, "", page(2)...),
		rec(flagContinue|flagPage, "", page(3)...), // page 0 again
		rec(0x1000|flagContinue|flagZero, "", 0),   // page 1 again, now zero
	)}.bytes()
	s, imgs := parseBytes(t, data)
	if s.Stats != (Stats{Pages: 3, Zeros: 1, Resent: 2, Unsent: 2}) {
		t.Errorf("stats %+v", s.Stats)
	}
	buf := make([]byte, 8192)
	imgs["pc.ram"].ReadAt(buf, 0)
	if !bytes.Equal(buf, cat(page(3), page(0))) {
		t.Error("resent pages do not hold their last content")
	}
	again, againImgs := parseBytes(t, joinBytes(t, s, memSource(imgs)))
	again.Stats.Pages, again.Stats.Zeros = s.Stats.Pages, s.Stats.Zeros // page 1 goes out as ZERO twice now
	if !equalImages(againImgs, imgs) || again.Stats != s.Stats {
		t.Error("Parse(Join(Parse(x))) differs from Parse(x)")
	}
}

func TestReaderRestLimit(t *testing.T) {
	r := newReader(strings.NewReader("0123456789"))
	if _, err := r.rest(9); !errors.Is(err, ErrTooLarge) {
		t.Errorf("rest over the limit: %v", err)
	}
	r = newReader(strings.NewReader("0123456789"))
	if b, err := r.rest(10); err != nil || string(b) != "0123456789" {
		t.Errorf("rest at the limit: %q, %v", b, err)
	}
}

func TestJoinInvalid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(s *Stream)
	}{
		{"page size", func(s *Stream) { s.Config.PageBits = 9 }},
		{"capability", func(s *Stream) { s.Config.Capabilities = []string{"mapped-ram"} }},
		{"uuid", func(s *Stream) { s.Config.UUID = []byte{1} }},
		{"ram version", func(s *Stream) { s.RAM.Version = 3 }},
		{"empty name", func(s *Stream) { s.Blocks[0].Name = "" }},
		{"long name", func(s *Stream) { s.Blocks[0].Name = strings.Repeat("x", 256) }},
		{"duplicate name", func(s *Stream) { s.Blocks[1].Name = s.Blocks[0].Name }},
		{"unaligned length", func(s *Stream) { s.Blocks[0].Length++ }},
		{"huge block", func(s *Stream) { s.Blocks[0].Length = 1 << 40 }},
		{"address without x-ignore-shared", func(s *Stream) { s.Blocks[0].Addr = 1 }},
		{"empty last block", func(s *Stream) { s.Blocks = append(s.Blocks, Block{Name: "z"}) }},
		{"no START", func(s *Stream) { s.Layout.Sections[0].Type = SectionPart }},
		{"two STARTs", func(s *Stream) { s.Layout.Sections[1].Type = SectionStart }},
		{"run past the block", func(s *Stream) { s.Layout.Sections[1].Runs[0].Count++ }},
		{"empty run", func(s *Stream) { s.Layout.Sections[1].Runs[0].Count = 0 }},
		{"bad block index", func(s *Stream) { s.Layout.Sections[1].Runs[0].Block = 99 }},
		{"unnamed first run", func(s *Stream) { s.Layout.Sections[1].Runs[0].Named = false }},
		{"unnamed run for another block", func(s *Stream) { s.Layout.Sections[1].Runs[1].Named = false }},
		{"blocks without sections", func(s *Stream) { s.Layout = Layout{} }},
		{"no devices", func(s *Stream) { s.Devices = nil }},
		{"devices start oddly", func(s *Stream) { s.Devices = []byte{secPart, secEOF} }},
		{"devices without EOF", func(s *Stream) { s.Devices = []byte{secFull} }},
		{"no description", func(s *Stream) { s.Description = nil }},
		{"description not JSON", func(s *Stream) { s.Description = []byte("{") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, imgs := synth{config: &Config{Machine: "pc-i440fx-7.2"}, blocks: qemuLikeBlocks(), footers: true}.build(t)
			tt.mutate(s)
			if err := Join(t.Context(), io.Discard, s, memSource(imgs)); !errors.Is(err, ErrInvalid) {
				t.Errorf("Join: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestJoinShortImage(t *testing.T) {
	s, imgs := synth{blocks: qemuLikeBlocks()[:1]}.build(t)
	imgs["pc.ram"].length -= 4096
	err := Join(t.Context(), io.Discard, s, memSource(imgs))
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), `block "pc.ram"`) {
		t.Errorf("Join from a short image: %v", err)
	}
}
