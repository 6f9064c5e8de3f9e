package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
