package transport_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/transport"
)

func TestLoadOrCreateIdentityPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "ntc")
	first, created, err := transport.LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("first call: created = false, want true")
	}
	second, created, err := transport.LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("second call: created = true, want false")
	}
	loaded, err := transport.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID() != first.ID() || loaded.ID() != first.ID() {
		t.Fatalf("IDs differ: created %s, then %s and %s", first.ID(), second.ID(), loaded.ID())
	}
	cert := loaded.TLSCertificate()
	if transport.ID(sha256.Sum256(cert.Certificate[0])) != loaded.ID() {
		t.Error("ID is not the SHA-256 of the certificate")
	}
	if cert.Leaf == nil {
		t.Error("certificate has no parsed Leaf")
	}

	for name, want := range map[string]fs.FileMode{
		dir:                                   0o700 | fs.ModeDir,
		filepath.Join(dir, transport.KeyFile): 0o600,
	} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode(), want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("state directory holds %d entries, want the key and the certificate (no temporary files)", len(entries))
	}
}

func TestLoadIdentityAbsent(t *testing.T) {
	dir := t.TempDir()
	_, err := transport.LoadIdentity(dir)
	if !errors.Is(err, transport.ErrNoIdentity) {
		t.Fatalf("got %v, want ErrNoIdentity", err)
	}
	if !strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "ntc ") {
		t.Errorf("error %q: want the directory named, and no command of the CLI (cmd/ntc adds that)", err)
	}
}

func TestLoadOrCreateIdentityDamaged(t *testing.T) {
	tests := []struct {
		name string
		// damage changes a freshly created identity in dir.
		damage func(t *testing.T, dir string)
		// wantRecovered: LoadOrCreate keeps the key and issues a new
		// certificate; otherwise it must fail.
		wantRecovered bool
	}{
		{
			name:          "interrupted after the key was written",
			damage:        func(t *testing.T, dir string) { remove(t, dir, transport.CertFile) },
			wantRecovered: true,
		},
		{
			name:   "key lost",
			damage: func(t *testing.T, dir string) { remove(t, dir, transport.KeyFile) },
		},
		{
			name:   "key is garbage",
			damage: func(t *testing.T, dir string) { write(t, dir, transport.KeyFile, []byte("not a key")) },
		},
		{
			name: "key of another identity",
			damage: func(t *testing.T, dir string) {
				key, err := os.ReadFile(filepath.Join(dir, "..", "other", transport.KeyFile))
				if err != nil {
					t.Fatal(err)
				}
				write(t, dir, transport.KeyFile, key)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "node")
			if _, _, err := transport.LoadOrCreateIdentity(filepath.Join(root, "other")); err != nil {
				t.Fatal(err)
			}
			orig, _, err := transport.LoadOrCreateIdentity(dir)
			if err != nil {
				t.Fatal(err)
			}
			keyBefore := read(t, dir, transport.KeyFile)
			tt.damage(t, dir)
			keyDamaged, _ := os.ReadFile(filepath.Join(dir, transport.KeyFile))

			id, created, err := transport.LoadOrCreateIdentity(dir)
			if !tt.wantRecovered {
				if err == nil {
					t.Fatalf("got identity %s (created %v), want an error", id.ID(), created)
				}
				after, _ := os.ReadFile(filepath.Join(dir, transport.KeyFile))
				if !bytes.Equal(after, keyDamaged) {
					t.Error("a failed load changed the key file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !created || id.ID() == orig.ID() {
				t.Errorf("created = %v, ID %s: want a new certificate", created, id.ID())
			}
			if !bytes.Equal(read(t, dir, transport.KeyFile), keyBefore) {
				t.Error("recovery replaced the key")
			}
			if loaded, err := transport.LoadIdentity(dir); err != nil || loaded.ID() != id.ID() {
				t.Errorf("LoadIdentity after recovery = %v, %v", loaded, err)
			}
		})
	}
}

func remove(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIdentitiesAreDistinct(t *testing.T) {
	a, err := transport.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	b, err := transport.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() == b.ID() || a.ID().IsZero() {
		t.Fatalf("IDs %s and %s", a.ID(), b.ID())
	}
}
