// Package configs holds ntc's example configuration and systemd units; its
// tests check that they are valid as shipped.
package configs

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildNTC builds the ntc binary once for the units' ExecStart lines.
func buildNTC(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ntc")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/ntc").CombinedOutput()
	if err != nil {
		t.Fatalf("build ntc: %v\n%s", err, out)
	}
	return bin
}

// execStart returns the unit's ExecStart command line, split at spaces.
func execStart(t *testing.T, unit string) []string {
	t.Helper()
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("%s has no ExecStart", unit)
	return nil
}

// TestUnitsVerify runs systemd-analyze verify on each unit, with ExecStart
// pointing at a freshly built ntc: any complaint (an unknown key, a bad
// value) fails. Each ExecStart's arguments must also parse: the same command
// with --help exits 0 only if every flag exists.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian's systemd package has it)")
	}
	units, _ := filepath.Glob("*.service")
	if len(units) == 0 {
		t.Fatal("no units")
	}
	bin := buildNTC(t)
	dir := t.TempDir()
	for _, u := range units {
		t.Run(u, func(t *testing.T) {
			b, err := os.ReadFile(u)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(b), "/usr/local/bin/ntc", bin)
			name := u
			if strings.HasSuffix(u, "@.service") {
				name = strings.TrimSuffix(u, "@.service") + "@test.service"
			}
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", p).CombinedOutput()
			// Units it pulls in (network-online.target) may not exist in a
			// container: complaints about those are not the unit's.
			var bad []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if l != "" && strings.Contains(l, name) {
					bad = append(bad, l)
				}
			}
			if err != nil || len(bad) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", u, err, out)
			}
			args := execStart(t, u)[1:]
			for i, a := range args {
				args[i] = strings.ReplaceAll(a, "%i", "test")
			}
			cmd := exec.Command(bin, append(args, "--help")...)
			cmd.Env = append(os.Environ(), "NTC_HOME="+t.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: ntc %s --help: %v\n%s", u, strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestServeUnitKeepsCopies: stopping or restarting the receiver's unit
// signals serve only, not the copies it resumed for a hand-off, which run
// in its control group (see the unit's comment on KillMode).
func TestServeUnitKeepsCopies(t *testing.T) {
	b, err := os.ReadFile("ntc-serve.service")
	if err != nil {
		t.Fatal(err)
	}
	var modes []string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "KillMode="); ok {
			modes = append(modes, v)
		}
	}
	if len(modes) != 1 || modes[0] != "process" {
		t.Fatalf("ntc-serve.service KillMode %q, want one KillMode=process: a stop would kill the resumed copies", modes)
	}
}
