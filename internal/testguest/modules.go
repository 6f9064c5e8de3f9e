package testguest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// wantModules are the drivers the guest loads, if the kernel has them as
// modules: PCI transport, the disk, and the NIC (loaded so the device is live
// for migration; the guest never brings the interface up).
var wantModules = []string{"virtio_pci", "virtio_blk", "virtio_net"}

// module is one loadable kernel module in an extracted kernel package.
type module struct {
	Name    string   // normalised: '-' becomes '_'
	Path    string   // absolute path of the .ko
	Depends []string // normalised names from .modinfo "depends="
}

// modName normalises a module or file name the way the kernel does.
func modName(s string) string {
	s = filepath.Base(s)
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// parseModinfo returns the key=value pairs of a .modinfo section: NUL
// separated strings, possibly padded with extra NULs.
func parseModinfo(b []byte) map[string]string {
	info := make(map[string]string)
	for _, f := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(f, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		if _, dup := info[string(k)]; !dup {
			info[string(k)] = string(v)
		}
	}
	return info
}

// readModule reads the dependency list of one .ko file.
func readModule(path string) (module, error) {
	f, err := elf.Open(path)
	if err != nil {
		return module{}, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return module{}, fmt.Errorf("read module %s: no .modinfo section", path)
	}
	b, err := sec.Data()
	if err != nil {
		return module{}, fmt.Errorf("read module %s .modinfo: %w", path, err)
	}
	info := parseModinfo(b)
	m := module{Name: modName(path), Path: path}
	if n := info["name"]; n != "" {
		m.Name = modName(n)
	}
	for _, d := range strings.Split(info["depends"], ",") {
		if d = strings.TrimSpace(d); d != "" {
			m.Depends = append(m.Depends, modName(d))
		}
	}
	return m, nil
}

// moduleTree indexes the modules of an extracted kernel: modDir is
// lib/modules/<release>.
type moduleTree struct {
	files   map[string]string // name → .ko path
	builtin map[string]bool
	read    func(path string) (module, error) // readModule; replaced in tests
}

func readModuleTree(modDir string) (*moduleTree, error) {
	t := &moduleTree{files: make(map[string]string), builtin: make(map[string]bool), read: readModule}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch name := d.Name(); {
		case strings.HasSuffix(name, ".ko"):
			t.files[modName(name)] = p
		case strings.Contains(name, ".ko."):
			// Compressed modules would need a decompressor in the guest's
			// busybox; Debian's cloud kernel ships them uncompressed.
			t.files[modName(name[:strings.Index(name, ".ko.")])] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list kernel modules in %s: %w", modDir, err)
	}
	if f, err := os.Open(filepath.Join(modDir, "modules.builtin")); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			t.builtin[modName(sc.Text())] = true
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read modules.builtin: %w", err)
		}
	}
	return t, nil
}

// loadOrder returns the modules to insert for want, dependencies first, each
// once. Wanted drivers that are built into the kernel are skipped.
func (t *moduleTree) loadOrder(want []string) ([]module, error) {
	var order []module
	state := make(map[string]int) // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain[:len(chain):len(chain)], name), " → "))
		}
		path, ok := t.files[name]
		if !ok {
			if t.builtin[name] {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("kernel module %s (needed by %s) is neither a module nor built in", name, strings.Join(chain, " → "))
		}
		if !strings.HasSuffix(path, ".ko") {
			return fmt.Errorf("kernel module %s is compressed (%s): unsupported", name, filepath.Base(path))
		}
		state[name] = 1
		m, err := t.read(path)
		if err != nil {
			return err
		}
		for _, d := range m.Depends {
			if err := visit(d, append(chain[:len(chain):len(chain)], name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, w := range want {
		if err := visit(modName(w), []string{"guest"}); err != nil {
			return nil, err
		}
	}
	return order, nil
}
