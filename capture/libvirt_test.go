package capture

import (
	"encoding/xml"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/digitalocean/go-libvirt"

	"github.com/ntc-project/ntc/qemu"
)

// The libvirt monitor finds overlays of earlier runs by the file names
// newOverlayName gives their nodes: the two must agree.
func TestOverlayFileSuffix(t *testing.T) {
	for _, seq := range []int{1, 42, 1234567} {
		l, err := newOverlayName(t.TempDir(), "/images/disk.qcow2", seq)
		if err != nil {
			t.Fatal(err)
		}
		suffix := overlayFileSuffix(l.Node)
		if suffix == "" || !strings.HasSuffix(l.File, suffix) {
			t.Errorf("overlay %s (node %s): suffix %q does not end its file name", l.File, l.Node, suffix)
		}
	}
	for _, node := range []string{"libvirt-1-format", "ntc-1-ab", "ntc1-", "ntc1-XY", "disk0", ""} {
		if s := overlayFileSuffix(node); s != "" {
			t.Errorf("overlayFileSuffix(%q) = %q, want none", node, s)
		}
	}
}

// domainXMLChain is the disk part of a live domain XML after a snapshot.
const domainXMLChain = `<domain type='qemu' id='3'>
  <name>g</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/v/disk.qcow2.ntc-000002-ab12.qcow2' index='3'/>
      <backingStore type='file' index='2'>
        <format type='qcow2'/>
        <source file='/v/disk.qcow2.ntc-000001-cd34.qcow2'/>
        <backingStore type='file' index='1'>
          <format type='qcow2'/>
          <source file='/v/disk.qcow2'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/v/x &amp; y.iso' index='4'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
      <alias name='ide0-1-0'/>
    </disk>
  </devices>
</domain>`

func TestParseDomainDisks(t *testing.T) {
	disks, err := parseDomainDisks([]byte(domainXMLChain))
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 2 {
		t.Fatalf("%d disks, want 2", len(disks))
	}
	want := []string{"/v/disk.qcow2.ntc-000002-ab12.qcow2", "/v/disk.qcow2.ntc-000001-cd34.qcow2", "/v/disk.qcow2"}
	if got := disks[0].chain(); !slices.Equal(got, want) {
		t.Errorf("vda chain %q, want %q", got, want)
	}
	if disks[0].Target.Dev != "vda" || disks[0].Alias.Name != "virtio-disk0" {
		t.Errorf("vda: %+v", disks[0])
	}
	if got := disks[1].chain(); !slices.Equal(got, []string{"/v/x & y.iso"}) {
		t.Errorf("hdc chain %q", got)
	}
	if _, err := parseDomainDisks([]byte("<domain><devices><disk>")); err == nil {
		t.Error("truncated XML accepted")
	}
}

// FuzzParseDomainDisks: libvirt's XML never panics the decoder, and every
// chain lists only non-empty files.
func FuzzParseDomainDisks(f *testing.F) {
	f.Add([]byte(domainXMLChain))
	f.Add([]byte(`<domain><devices><disk><source dev='/dev/sdb'/><target dev='sdb'/></disk></devices></domain>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		disks, err := parseDomainDisks(b)
		if err != nil {
			return
		}
		for _, d := range disks {
			if slices.Contains(d.chain(), "") {
				t.Fatalf("empty file in chain of %+v", d)
			}
		}
	})
}

func TestSnapshotXML(t *testing.T) {
	disks, err := parseDomainDisks([]byte(domainXMLChain))
	if err != nil {
		t.Fatal(err)
	}
	def, err := snapshotXML(disks, map[string]string{"vda": "/v/o'v & <3>.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Disks []struct {
			Name     string `xml:"name,attr"`
			Snapshot string `xml:"snapshot,attr"`
			Source   struct {
				File string `xml:"file,attr"`
			} `xml:"source"`
		} `xml:"disks>disk"`
	}
	if err := xml.Unmarshal([]byte(def), &got); err != nil {
		t.Fatalf("%s: %v", def, err)
	}
	if len(got.Disks) != 2 || got.Disks[0].Name != "vda" || got.Disks[0].Snapshot != "external" ||
		got.Disks[0].Source.File != "/v/o'v & <3>.qcow2" || got.Disks[1].Name != "hdc" || got.Disks[1].Snapshot != "no" {
		t.Errorf("snapshot XML %s decodes to %+v", def, got)
	}
	_, err = snapshotXML(disks, map[string]string{"vdz": "/v/o.qcow2"})
	var re *qemu.ReplyError
	if !errors.As(err, &re) {
		t.Errorf("a disk libvirt does not have: %v, want a refused command", err)
	}
}

func TestUUIDString(t *testing.T) {
	u := libvirt.UUID{0xb7, 0xac, 0x24, 0xf3, 0x0a, 0x0b, 0x48, 0xea, 0x94, 0x25, 0x76, 0x76, 0x87, 0x8b, 0xd0, 0x22}
	if got, want := UUIDString(u), "b7ac24f3-0a0b-48ea-9425-7676878bd022"; got != want {
		t.Errorf("uuidString = %s, want %s", got, want)
	}
}

func TestConfigTarget(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		ok   bool
		name string
	}{
		{Config{QMP: "/q.sock"}, true, "/q.sock"},
		{Config{Domain: "web"}, true, "libvirt domain web at qemu:///system"},
		{Config{Domain: "web", Connect: "qemu:///session"}, true, "libvirt domain web at qemu:///session"},
		{Config{QMP: "/q.sock", Domain: "web"}, false, ""},
		{Config{}, false, ""},
		{Config{QMP: "/q.sock", Connect: "qemu:///system"}, false, ""},
	} {
		err := tc.cfg.checkTarget()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: checkTarget %v", tc.cfg, err)
		}
		if tc.ok && tc.cfg.target() != tc.name {
			t.Errorf("%+v: target %q, want %q", tc.cfg, tc.cfg.target(), tc.name)
		}
	}
}

func TestLibvirtSocketRemote(t *testing.T) {
	for _, uri := range []string{"qemu+ssh://host/system", "xen:///system", "qemu:///embed?root=/x"} {
		if _, err := libvirtSocket(uri); !errors.Is(err, ErrRemoteLibvirt) || !strings.Contains(err.Error(), uri) {
			t.Errorf("libvirtSocket(%q) = %v, want ErrRemoteLibvirt naming the URI", uri, err)
		}
	}
}

func TestQMPReply(t *testing.T) {
	if _, err := qmpReply([]byte(`{"id":"libvirt-9","error":{"class":"GenericError","desc":"Failed to find node"}}`)); err == nil {
		t.Error("an error reply passed")
	} else if re := (*qemu.ReplyError)(nil); !errors.As(err, &re) || re.Desc != "Failed to find node" {
		t.Errorf("error reply: %v", err)
	}
	if out, err := qmpReply([]byte(`{"return":{},"id":"libvirt-10"}`)); err != nil || len(out) == 0 {
		t.Errorf("a good reply: %q, %v", out, err)
	}
	if _, err := qmpReply([]byte(`not json`)); err == nil {
		t.Error("garbage passed")
	}
}
