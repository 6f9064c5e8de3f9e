package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeThatCannotBindLeavesNothing: a second serve on an address in use
// fails saying so, and creates no repository.
func TestServeThatCannotBindLeavesNothing(t *testing.T) {
	office, home := newNode(t), newNode(t)
	addr, _ := serve(t, home, t.TempDir(), office.id)
	store := filepath.Join(t.TempDir(), "never")
	out, err := home.cmd(t.Context(), "serve", "--listen", addr, "--store", store, "--allow", office.id).CombinedOutput()
	if exitCode(err) != exitError || !strings.Contains(string(out), "address already in use") {
		t.Errorf("serve on %s, in use: exit %d: %s", addr, exitCode(err), out)
	}
	if _, err := os.Stat(store); err == nil {
		t.Errorf("the serve that could not bind created %s", store)
	}
}
