package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture"
)

// hostileBase is a checkpoint manifest whose machine description passes
// the allowlist: the test guest's machine.
func hostileBase() *capture.Manifest {
	return &capture.Manifest{
		Version: capture.ManifestVersion, Seq: 1,
		Machine: capture.Machine{
			Arch: "x86_64", Type: "pc-i440fx-7.2", Accel: "tcg", CPU: capture.CPU{Model: "qemu64", Count: 1},
			RAM: capture.MachineRAM{Size: 256 << 20, Backend: capture.RAMPlain},
			Devices: []capture.Device{
				{Driver: "virtio-blk-pci", ID: "vda", Props: map[string]string{"drive": "disk0"}},
				{Driver: "virtio-net-pci", ID: "nic0", Props: map[string]string{"netdev": "n0"}},
			},
			NICs:     []capture.NIC{{ID: "nic0", Netdev: "n0"}},
			Serials:  []capture.Serial{{Chardev: "ser0"}},
			Chardevs: []string{"ser0"},
			Flags:    []string{"nodefaults"},
		},
		Disks:       []capture.Disk{{Name: "disk-vda", Node: "disk0", Device: "vda", Index: "disk-vda.idx", Size: 1 << 20}},
		RAM:         []capture.RAM{{Name: "pc.ram", Index: "ram-pc.ram.idx", Size: 256 << 20}},
		DeviceState: capture.ImageRef{Index: "device.idx", Size: 3},
		Stream:      capture.StreamInfo{Format: capture.StreamFormat, Index: "stream.idx", Size: 2},
	}
}

// TestResumeRefusesHostileCheckpoints pushes hostile checkpoints through a
// real 'ntc serve' and resumes each with a real 'ntc resume': the payloads
// of issue 10, as machine descriptions now that a checkpoint carries data
// (and one old manifest carrying a command line), and names and files that
// would lead out of the images directory. Each is refused with an error
// naming the item; nothing runs (the QEMU and qemu-img ntc would run are
// stand-ins that leave a marker), nothing is written outside the work
// directory, which stays empty. Payloads 'ntc serve' cannot produce (a
// symlink, a sparse file) are put into a received images directory.
func TestResumeRefusesHostileCheckpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	tmp := t.TempDir()
	out := filepath.Join(tmp, "outside") // where the payloads aim
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	// Stand-ins for every program resume may run: each leaves a marker.
	bin := filepath.Join(tmp, "bin")
	os.Mkdir(bin, 0o700)
	marker := filepath.Join(tmp, "ran")
	for _, name := range []string{"qemu-system-x86_64", "qemu-img", "fake-qemu"} {
		script := "#!/bin/sh\necho \"$0 $*\" >> " + marker + "\nexit 1\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	kernel := filepath.Join(tmp, "vmlinuz")
	os.WriteFile(kernel, []byte("kernel"), 0o600)

	type payload struct {
		name, says string
		tamper     func(m *capture.Manifest)
		raw        string                         // the manifest itself, instead of a tampered base
		place      func(t *testing.T, dir string) // then change the received images directory
	}
	payloads := []payload{
		{name: "old manifest running a program", says: "take a new checkpoint",
			raw: `{"version":1,"seq":1,"machine":{"argv":["/bin/sh","-c","touch ` + out + `/pwned"],"type":"pc-i440fx-7.2"}}`},
		{name: "program as arch", says: `machine arch "../../../../bin/sh"`, tamper: func(m *capture.Manifest) { m.Machine.Arch = "../../../../bin/sh" }},
		{name: "plugin", says: `"-plugin"`, tamper: func(m *capture.Manifest) { m.Machine.Unsupported = []string{"-plugin"} }},
		{name: "monitor over tcp", says: `"-monitor"`, tamper: func(m *capture.Manifest) { m.Machine.Unsupported = []string{"-monitor"} }},
		{name: "vnc", says: "option -vnc", tamper: func(m *capture.Manifest) { m.Machine.Flags = []string{"vnc"} }},
		{name: "gdb", says: "option -gdb", tamper: func(m *capture.Manifest) { m.Machine.Flags = []string{"gdb"} }},
		{name: "memory-backend-file mem-path", says: `-object "memory-backend-file"`, tamper: func(m *capture.Manifest) {
			m.Machine.Objects = []capture.Object{{Type: "memory-backend-file", ID: "m0", Props: map[string]string{"mem-path": out + "/mem"}}}
		}},
		{name: "secret file", says: `-object "secret"`, tamper: func(m *capture.Manifest) {
			m.Machine.Objects = []capture.Object{{Type: "secret", ID: "s0", Props: map[string]string{"file": "/etc/shadow"}}}
		}},
		{name: "chardev file path", says: `chardev id "ser0,path=`, tamper: func(m *capture.Manifest) {
			id := "ser0,path=" + out + "/chardev"
			m.Machine.Chardevs, m.Machine.Serials = []string{id}, []capture.Serial{{Chardev: id}}
		}},
		{name: "guestfwd cmd", says: `netdev id "n0,guestfwd=`, tamper: func(m *capture.Manifest) {
			nd := "n0,guestfwd=tcp:10.0.2.100:1-cmd:touch " + out + "/fwd"
			m.Machine.NICs[0].Netdev, m.Machine.Devices[1].Props["netdev"] = nd, nd
		}},
		{name: "tap script", says: `-nic model "tap,script=`, tamper: func(m *capture.Manifest) {
			m.Machine.NICs = append(m.Machine.NICs, capture.NIC{Nic: true, Model: "tap,script=" + out + "/up"})
		}},
		{name: "drive file=/dev/sda", says: `property "file" is not allowed`, tamper: func(m *capture.Manifest) { m.Machine.Devices[0].Props["file"] = "/dev/sda" }},
		{name: "fw_cfg file", says: `"-fw_cfg"`, tamper: func(m *capture.Manifest) { m.Machine.Unsupported = []string{"-fw_cfg"} }},
		{name: "device loading a file", says: `driver "loader"`, tamper: func(m *capture.Manifest) {
			m.Machine.Devices = append(m.Machine.Devices, capture.Device{Driver: "loader", Props: map[string]string{"file": "/etc/shadow"}})
		}},
		{name: "disk named ../x", says: `name "../x"`, tamper: func(m *capture.Manifest) { m.Disks[0].Name = "../x" }},
		{name: "index out of the directory", says: `"../../etc/hostname.idx"`, tamper: func(m *capture.Manifest) { m.Disks[0].Index = "../../etc/hostname.idx" }},
		{name: "manifest over the limit, pushed", says: "more than the 1048576 allowed",
			raw: `{"version":2,"pad":"` + strings.Repeat(" ", 2<<20) + `"}`},
		{name: "sparse 64 GiB manifest", says: "more than the 1048576 allowed", place: func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "manifest.json"), os.O_WRONLY|os.O_TRUNC, 0)
			if err == nil {
				err = f.Truncate(64 << 30)
				f.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
		}},
		{name: "stream is a symlink to /dev/zero", says: "escapes", place: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "stream"))
			if err := os.Symlink("/dev/zero", filepath.Join(dir, "stream")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, p := range payloads {
		t.Run(p.name, func(t *testing.T) {
			set := "hostile-" + string(rune('a'+i))
			dir := t.TempDir()
			b := []byte(p.raw)
			if p.raw == "" {
				m := hostileBase()
				if p.tamper != nil {
					p.tamper(m)
				}
				var err error
				if b, err = json.Marshal(m); err != nil {
					t.Fatal(err)
				}
			}
			files := map[string][]byte{"manifest.json": b, "stream": []byte("{}"), "device": []byte("dev")}
			var args []string
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, filepath.Join(dir, name))
			}
			if _, err := push(t, ctx, office, addr, home.id, append(args, "--name", set)...); err != nil {
				t.Fatalf("push: %v", err)
			}
			images := filepath.Join(store, "sets", set, "images")
			if p.place != nil {
				p.place(t, images)
			}
			work := filepath.Join(tmp, "work-"+set)
			c := home.cmd(ctx, "resume", "--store", store, "--name", set, "--workdir", work, "--qemu", filepath.Join(bin, "fake-qemu"),
				"--kernel", kernel, "--initrd", kernel)
			c.Env = append(c.Env, "PATH="+bin+":"+os.Getenv("PATH"))
			msg, err := c.CombinedOutput()
			t.Logf("ntc resume said: %s", msg)
			if code := exitCode(err); code != exitError || !strings.Contains(string(msg), p.says) {
				t.Errorf("exit %d, %q; want exit %d naming %s", code, msg, exitError, p.says)
			}
			if b, err := os.ReadFile(marker); err == nil {
				t.Errorf("resume ran a program: %s", b)
			}
			if ents, _ := os.ReadDir(out); len(ents) > 0 {
				t.Errorf("something was written outside the work directory: %v", ents)
			}
			if ents, err := os.ReadDir(work); err == nil && len(ents) > 0 {
				t.Errorf("the refused resume left files in its work directory: %v", ents)
			}
		})
	}
}
