package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

// TestConfigIsDecodedStrictly: keys the configuration file may not hold and
// values, from the file or NTC_* variables, of the wrong type stop ntc with
// a usage error saying which and where, before the command does anything.
func TestConfigIsDecodedStrictly(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		file string            // configuration file contents ("" for none)
		env  map[string]string // NTC_* variables
		says []string
	}{
		{name: "typo in a peer's key", file: "peers:\n  home: {adr: x}\n", says: []string{`unknown key "peers.home.adr"`}},
		{name: "typo in a key", file: "serve:\n  stoer: /srv\n", says: []string{`unknown key "serve.stoer"`, "\tserve.store", "ntc.example.yaml"}},
		{name: "unknown section", file: "sever:\n  store: /srv\n", says: []string{`unknown key "sever.store"`, "\tserve.store"}},
		{name: "top-level typo", file: "hoem: /x\n", says: []string{`unknown key "hoem"`, "\thome"}},
		{name: "word for a number", file: "serve:\n  max-conns: lots\n", says: []string{"serve.max-conns", `"lots"`, "whole number"}},
		{name: "duration without unit", file: "replicate:\n  every: 5\n", says: []string{"replicate.every", "duration"}},
		{name: "list for a string", file: "push:\n  to: [a, b]\n", says: []string{"push.to", "single value"}},
		{name: "word for a switch", file: "resume:\n  libvirt: maybe\n", says: []string{"resume.libvirt", `"maybe"`, "true or false"}},
		{name: "env switch", env: map[string]string{"NTC_RESUME_PERSISTENT": "sometimes"}, says: []string{"NTC_RESUME_PERSISTENT", "true or false"}},
		{name: "env number", env: map[string]string{"NTC_PUSH_STREAMS": "four"}, says: []string{`NTC_PUSH_STREAMS = "four"`, "whole number"}},
		{name: "env duration", env: map[string]string{"NTC_REPLICATE_EVERY": "5"}, says: []string{"NTC_REPLICATE_EVERY", "duration"}},
		{name: "env over a good file", file: "serve:\n  max-conns: 3\n", env: map[string]string{"NTC_SERVE_MAX_CONNS": "-x"}, says: []string{"NTC_SERVE_MAX_CONNS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"version"}
			if tc.file != "" {
				cfg := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
				if err := os.WriteFile(cfg, []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append([]string{"--config", cfg}, args...)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, out, errs := ntc(t, t.Context(), args...)
			if code != exitUsage || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d before the command ran", code, out, errs, exitUsage)
			}
			for _, s := range tc.says {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr %q does not say %q", errs, s)
				}
			}
		})
	}

	// What is valid still is: the example configuration, an empty section,
	// a flag that overrides a bad variable.
	t.Run("valid", func(t *testing.T) {
		empty := filepath.Join(dir, "empty-section.yaml")
		if err := os.WriteFile(empty, []byte("serve:\nreplicate:\n  every: 1m30s\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, cfg := range []string{filepath.Join("..", "..", "configs", "ntc.example.yaml"), filepath.Join("..", "..", "configs", "ntc-pair.example.yaml"), empty} {
			if code, _, errs := ntc(t, t.Context(), "--config", cfg, "version"); code != 0 {
				t.Errorf("--config %s: exit %d: %s", cfg, code, errs)
			}
		}
		t.Setenv("NTC_CHUNK_AVERAGE", "8K")
		t.Setenv("NTC_SERVE_KEEP", "2")
		if code, _, errs := ntc(t, t.Context(), "version"); code != 0 {
			t.Errorf("valid NTC_* values: exit %d: %s", code, errs)
		}
	})
}

// TestConfigKeysCoverTheFlags: every key a command binds a flag to is a key
// the configuration may set (or ntc would refuse its own flags' keys).
func TestConfigKeysCoverTheFlags(t *testing.T) {
	g := newGlobals(nil, nil)
	newRootCommand(g)
	if len(g.bindings) == 0 {
		t.Fatal("no command binds a flag")
	}
	for _, b := range g.bindings {
		if _, ok := configKeys[b.key]; !ok {
			t.Errorf("%s binds --%s to %q, which configKeys lacks", b.cmd.Name(), b.flag, b.key)
		}
	}
}

// TestExampleConfigHasEveryKey: configs/ntc.example.yaml, which the
// "unknown key" error points users to, sets every key the configuration
// may hold (peers, a map of names, by one example).
func TestExampleConfigHasEveryKey(t *testing.T) {
	v := viper.New()
	v.SetConfigFile(filepath.Join("..", "..", "configs", "ntc.example.yaml"))
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, k := range v.AllKeys() {
		has[k] = true
	}
	for k := range configKeys {
		if !has[k] && !strings.HasPrefix(k, "peers.") {
			t.Errorf("configs/ntc.example.yaml lacks %s", k)
		}
	}
}
