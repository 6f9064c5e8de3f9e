package capture

import (
	"reflect"
	"testing"

	"github.com/ntc-project/ntc/capture/migstream"
)

func TestStreamMetaRoundTrip(t *testing.T) {
	for _, s := range []*migstream.Stream{
		{
			Config:  &migstream.Config{Machine: "pc-i440fx-7.2", Capabilities: []string{}},
			RAM:     migstream.RAMHeader{SectionID: 2, InstanceID: 0, Version: 4},
			Footers: true,
			Blocks:  []migstream.Block{{Name: "pc.ram", Length: 1 << 20}, {Name: "/rom@etc/acpi/tables", Length: 4096}},
			Layout: migstream.Layout{Sections: []migstream.Section{
				{Type: migstream.SectionStart},
				{Type: migstream.SectionPart, Runs: []migstream.Run{
					{Block: 0, Page: 0, Count: 200, Named: true},
					{Block: 0, Page: 200, Count: 1, ForcePage: true},
					{Block: 1, Page: 0, Count: 1, Named: true},
				}},
				{Type: migstream.SectionEnd},
			}},
			Description: []byte(`{"page_size":4096,"devices":[]}`),
		},
		{
			Config:      &migstream.Config{Machine: "pc", PageBits: 12, Capabilities: []string{"x-ignore-shared"}, UUID: make([]byte, 16)},
			Blocks:      []migstream.Block{{Name: "pc.ram", Length: 4096, Addr: 1 << 30}},
			Layout:      migstream.CanonicalLayout([]migstream.Block{{Name: "pc.ram", Length: 4096}}, 4096),
			Description: []byte(`{}`),
		},
		{Description: []byte(`{}`)},
	} {
		b, err := encodeStreamMeta(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeStreamMeta(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip:\n got %+v\nwant %+v\njson %s", got, s, b)
		}
	}
}
