package capture

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ntc-project/ntc/capture/migstream"
)

// streamMeta is the JSON form of a migstream.Stream without its pages,
// device state and statistics: what Join needs besides the images. The
// layout is stored run by run as [block, page, count, flags] so that a
// busy guest's many short runs stay compact.
type streamMeta struct {
	Config      *configMeta         `json:"config,omitempty"`
	RAM         migstream.RAMHeader `json:"ram"`
	Footers     bool                `json:"footers"`
	Blocks      []blockMeta         `json:"blocks"`
	Sections    []sectionMeta       `json:"sections"`
	Description json.RawMessage     `json:"description"`
}

type configMeta struct {
	Machine  string `json:"machine"`
	PageBits uint32 `json:"page_bits,omitempty"`
	// Capabilities and UUID keep nil apart from empty (null vs [] or
	// ""): Join writes a subsection for an empty list but none for nil.
	Capabilities []string `json:"capabilities"`
	UUID         []byte   `json:"uuid"`
}

type blockMeta struct {
	Name   string `json:"name"`
	Length int64  `json:"length"`
	Addr   uint64 `json:"addr,omitempty"`
}

type sectionMeta struct {
	Type migstream.SectionType `json:"type"`
	Runs [][4]int64            `json:"runs"`
}

// Run flags in the stored layout.
const (
	runNamed     = 1
	runForcePage = 2
)

func encodeStreamMeta(s *migstream.Stream) ([]byte, error) {
	m := streamMeta{RAM: s.RAM, Footers: s.Footers, Description: json.RawMessage(s.Description)}
	if c := s.Config; c != nil {
		m.Config = &configMeta{Machine: c.Machine, PageBits: c.PageBits, Capabilities: c.Capabilities, UUID: c.UUID}
	}
	for _, b := range s.Blocks {
		m.Blocks = append(m.Blocks, blockMeta{Name: b.Name, Length: b.Length, Addr: b.Addr})
	}
	for _, sec := range s.Layout.Sections {
		sm := sectionMeta{Type: sec.Type, Runs: make([][4]int64, 0, len(sec.Runs))}
		for _, r := range sec.Runs {
			var flags int64
			if r.Named {
				flags |= runNamed
			}
			if r.ForcePage {
				flags |= runForcePage
			}
			sm.Runs = append(sm.Runs, [4]int64{int64(r.Block), r.Page, r.Count, flags})
		}
		m.Sections = append(m.Sections, sm)
	}
	if !json.Valid(m.Description) {
		return nil, errors.New("encode stream description: the VMDESCRIPTION is not JSON")
	}
	return json.Marshal(m)
}

func decodeStreamMeta(b []byte) (*migstream.Stream, error) {
	var m streamMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode stream description: %w", err)
	}
	s := &migstream.Stream{RAM: m.RAM, Footers: m.Footers, Description: []byte(m.Description)}
	if c := m.Config; c != nil {
		s.Config = &migstream.Config{Machine: c.Machine, PageBits: c.PageBits, Capabilities: c.Capabilities, UUID: c.UUID}
	}
	for _, b := range m.Blocks {
		s.Blocks = append(s.Blocks, migstream.Block{Name: b.Name, Length: b.Length, Addr: b.Addr})
	}
	for _, sm := range m.Sections {
		sec := migstream.Section{Type: sm.Type}
		for _, r := range sm.Runs {
			sec.Runs = append(sec.Runs, migstream.Run{
				Block: int(r[0]), Page: r[1], Count: r[2],
				Named: r[3]&runNamed != 0, ForcePage: r[3]&runForcePage != 0,
			})
		}
		s.Layout.Sections = append(s.Layout.Sections, sec)
	}
	return s, nil
}
