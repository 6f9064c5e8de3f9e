package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/capture"
)

// TestServeRefusesResumeSettingsThatConflict: a serve that accepts
// hand-offs refuses, before it creates its store, libvirt settings without
// resume.libvirt and plain-QEMU settings that libvirt decides itself.
func TestServeRefusesResumeSettingsThatConflict(t *testing.T) {
	n, peer := newNode(t), newNode(t)
	for _, tc := range []struct{ file, says string }{
		{"resume:\n  persistent: true\n", "resume.persistent is set but resume.libvirt is not"},
		{"resume:\n  connect: qemu:///session\n", "resume.connect is set but resume.libvirt is not"},
		{"resume:\n  libvirt-dir: /srv/ntc\n", "resume.libvirt-dir is set but resume.libvirt is not"},
		{"resume:\n  libvirt: true\n  qemu: /usr/bin/qemu-system-x86_64\n", "resume.qemu does not apply"},
		{"resume:\n  libvirt: true\n  user: nobody\n", "resume.user does not apply"},
	} {
		cfg := filepath.Join(t.TempDir(), "ntc.yaml")
		if err := os.WriteFile(cfg, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		store := filepath.Join(t.TempDir(), "store")
		c := n.cmd(t.Context(), "--config", cfg, "serve", "--listen", "127.0.0.1:0", "--store", store, "--allow", peer.id, "--resume-allow", peer.id)
		out, err := c.CombinedOutput()
		if exitCode(err) != exitUsage || !strings.Contains(string(out), tc.says) {
			t.Errorf("serve with %q: %v, %s; want a usage error saying %q", tc.file, err, out, tc.says)
		}
		if _, err := os.Stat(store); err == nil {
			t.Errorf("serve with %q left its store behind", tc.file)
		}
	}
}

// TestResumedHere: a hand-off marks the work directory of a copy serve's
// resumer started (so that the next copy may take it over) only for that
// copy: a QEMU whose QMP socket is in $NTC_HOME/resume/SET, or with
// resume.libvirt the domain named after the set whose XML is in
// resume.libvirt-dir/SET; never the user's own VM.
func TestResumedHere(t *testing.T) {
	home, lvdir := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(lvdir, "web"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lvdir, "web", libvirtDomainXML), []byte("<domain/>"), 0o600); err != nil {
		t.Fatal(err)
	}
	plainWork := filepath.Join(home, "resume", "web")
	for _, tc := range []struct {
		name    string
		libvirt bool
		cfg     capture.Config
		work    string
		ok      bool
	}{
		{"plain copy", false, capture.Config{Set: "web", QMP: filepath.Join(plainWork, "qmp.sock")}, plainWork, true},
		{"the user's QEMU", false, capture.Config{Set: "web", QMP: "/run/web/qmp.sock"}, plainWork, false},
		{"libvirt copy", true, capture.Config{Set: "web", Domain: "web"}, filepath.Join(lvdir, "web"), true},
		{"the user's domain", true, capture.Config{Set: "web", Domain: "web-original"}, filepath.Join(lvdir, "web"), false},
		{"a domain without resume.libvirt", false, capture.Config{Set: "web", Domain: "web"}, plainWork, false},
		{"a libvirt copy not made here", true, capture.Config{Set: "db", Domain: "db"}, filepath.Join(lvdir, "db"), false},
	} {
		g := newGlobals(nil, nil)
		g.v.Set("home", home)
		if tc.libvirt {
			g.v.Set("resume.libvirt", true)
			g.v.Set("resume.libvirt-dir", lvdir)
		}
		if work, ok := g.resumedHere(tc.cfg); work != tc.work || ok != tc.ok {
			t.Errorf("%s: resumedHere = %s, %v; want %s, %v", tc.name, work, ok, tc.work, tc.ok)
		}
	}
}
