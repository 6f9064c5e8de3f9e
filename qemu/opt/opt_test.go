package opt

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, implied string
		want        Opts
		err         bool
	}{
		{"virtio-blk-pci,drive=d0,id=vda", "driver", Opts{{"driver", "virtio-blk-pci"}, {"drive", "d0"}, {"id", "vda"}}, false},
		{"driver=file,filename=/a,,b,node-name=f0", "", Opts{{"driver", "file"}, {"filename", "/a,b"}, {"node-name", "f0"}}, false},
		{"file,,x,id=c", "backend", Opts{{"backend", "file,x"}, {"id", "c"}}, false},
		{"pc,accel=tcg,usb", "type", Opts{{"type", "pc"}, {"accel", "tcg"}, {"usb", "on"}}, false},
		{"a=b=c", "", Opts{{"a", "b=c"}}, false},
		{"256", "size", Opts{{"size", "256"}}, false},
		{"", "size", nil, false},
		{",id=x", "driver", Opts{{"driver", ""}, {"id", "x"}}, false},
		{"a=1,", "", Opts{{"a", "1"}}, false},
		{"=x", "", nil, true},
		{"a=1,,,=2", "", nil, true},
		{"a,,b", "", nil, true},
		{",", "", nil, true},
	} {
		got, err := Parse(tc.in, tc.implied)
		if tc.err {
			if err == nil || !errors.Is(err, ErrSyntax) {
				t.Errorf("Parse(%q): %v, %v; want a syntax error", tc.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q, %q) = %q, %v; want %q", tc.in, tc.implied, got, err, tc.want)
		}
	}
}

func TestEncodeRefusesWhatWouldNotReadBack(t *testing.T) {
	for _, o := range []Opts{{{"", "x"}}, {{"a=b", "x"}}, {{"a,b", "x"}}} {
		if s, err := o.Encode(""); err == nil {
			t.Errorf("Encode(%q) = %q, want an error", o, s)
		}
	}
	s, err := Opts{{"driver", "a=b"}, {"path", "/x,y"}}.Encode("driver")
	if err != nil || s != "driver=a=b,path=/x,,y" {
		t.Errorf("Encode = %q, %v", s, err)
	}
}

// FuzzParse: whatever Parse accepts, Encode writes back so that Parse reads
// the same elements.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"virtio-blk-pci,drive=d0,id=vda,addr=0x4", "driver=file,filename=/a,,b", "file,id=c,path=x,,y",
		"pc-i440fx-7.2,accel=tcg,memory-backend=pc.ram", "256M", "a=b=c,flag", ""} {
		f.Add(s, "driver")
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, s, implied string) {
		if strings.ContainsAny(implied, "=,") {
			return // implied keys are the caller's constants
		}
		o, err := Parse(s, implied)
		if err != nil {
			return
		}
		enc, err := o.Encode(implied)
		if err != nil {
			t.Fatalf("Parse(%q) = %q, which Encode refuses: %v", s, o, err)
		}
		back, err := Parse(enc, implied)
		if err != nil || !reflect.DeepEqual(back, o) {
			t.Fatalf("Parse(%q) = %q; encoded %q reads %q, %v", s, o, enc, back, err)
		}
	})
}
