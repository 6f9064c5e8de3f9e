package testguest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ntc-project/ntc/internal/filelock"
)

//go:embed init.sh
var initScript []byte

// recipeVersion changes whenever the way a guest is assembled changes in a way
// init.sh and wantModules do not show, so old cache entries are not reused.
const recipeVersion = "1"

// KernelMetaPackage is the Debian package whose dependency names the current
// cloud kernel.
const KernelMetaPackage = "linux-image-cloud-amd64"

// BusyboxPackage is the Debian package the guest's userland comes from.
const BusyboxPackage = "busybox-static"

// Options configure [Build].
type Options struct {
	// CacheDir holds built guests. Empty means $NTC_CACHE/guest if NTC_CACHE
	// is set, else ntc/guest under the user's cache directory
	// (~/.cache/ntc/guest); see [DefaultCacheDir].
	CacheDir string
	// KernelPackage pins the versioned kernel package, e.g.
	// "linux-image-6.1.0-56-cloud-amd64". Empty means the one
	// KernelMetaPackage depends on at the time of the first build; that
	// guest is then reused until the cache entry is removed.
	KernelPackage string
	// Logger, if set, is told each build step (info); nil discards. A
	// cached guest logs nothing.
	Logger *slog.Logger
}

// Guest is a built guest: a kernel and an initramfs to pass to QEMU's -kernel
// and -initrd.
type Guest struct {
	Dir    string `json:"-"` // the cache entry holding the files below
	Kernel string `json:"-"` // path of vmlinuz
	Initrd string `json:"-"` // path of the gzip-compressed newc initramfs

	KernelPackage  string    `json:"kernel_package"` // e.g. linux-image-6.1.0-56-cloud-amd64
	KernelVersion  string    `json:"kernel_version"` // Debian version of KernelPackage, e.g. 6.1.192-2
	KernelRelease  string    `json:"kernel_release"` // uname -r, e.g. 6.1.0-56-cloud-amd64
	BusyboxVersion string    `json:"busybox_version"`
	Modules        []string  `json:"modules"` // insmod order
	Built          time.Time `json:"built"`
}

const (
	guestMeta   = "guest.json"
	guestKernel = "vmlinuz"
	guestInitrd = "initrd.img"
)

// DefaultCacheDir returns where guests are cached when Options.CacheDir is
// empty: $NTC_CACHE/guest, else ntc/guest under os.UserCacheDir.
func DefaultCacheDir() (string, error) {
	if c := os.Getenv("NTC_CACHE"); c != "" {
		return filepath.Join(c, "guest"), nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory for the test guest (set NTC_CACHE): %w", err)
	}
	return filepath.Join(c, "ntc", "guest"), nil
}

// recipeKey names the cache entry for opts: it changes with anything that
// changes what is built.
func recipeKey(opts Options) string {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\nkernel %s\nbusybox %s\nmodules %s\n", recipeVersion,
		opts.KernelPackage, BusyboxPackage, strings.Join(wantModules, ","))
	h.Write(initScript)
	name := "cloud"
	if opts.KernelPackage != "" {
		name = opts.KernelPackage
	}
	return name + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// Build returns the guest for opts, building it on first use. A cached guest
// is returned without running anything. Builds are serialised across
// processes by a lock file in the cache directory and become visible by an
// atomic rename, so concurrent callers (parallel test binaries) get one build.
//
// Building needs apt-get (with current package lists: `apt-get update`) and
// dpkg-deb; it downloads KernelMetaPackage's kernel and BusyboxPackage. A
// failure is a *CommandError naming the command.
func Build(ctx context.Context, opts Options) (*Guest, error) {
	cache := opts.CacheDir
	if cache == "" {
		c, err := DefaultCacheDir()
		if err != nil {
			return nil, err
		}
		cache = c
	}
	dir := filepath.Join(cache, recipeKey(opts))
	if g, err := loadGuest(dir); err == nil {
		return g, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("create guest cache: %w", err)
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(cache, ".lock"), "another process building the test guest")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if g, err := loadGuest(dir); err == nil {
		return g, nil // another process built it while we waited
	}
	// Builds happen under the lock, so any leftover build directory is from
	// a build that died.
	if old, _ := filepath.Glob(filepath.Join(cache, ".build-*")); len(old) > 0 {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	tmp, err := os.MkdirTemp(cache, ".build-")
	if err != nil {
		return nil, fmt.Errorf("create guest build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	b := &builder{opts: opts, tmp: tmp}
	if err := b.build(ctx); err != nil {
		return nil, fmt.Errorf("build test guest: %w", err)
	}
	os.RemoveAll(dir) // an incomplete entry (no guest.json) from a crash
	if err := os.Rename(b.out, dir); err != nil {
		return nil, fmt.Errorf("install built guest: %w", err)
	}
	return loadGuest(dir)
}

// loadGuest reads a complete cache entry.
func loadGuest(dir string) (*Guest, error) {
	b, err := os.ReadFile(filepath.Join(dir, guestMeta))
	if err != nil {
		return nil, err
	}
	g := new(Guest)
	if err := json.Unmarshal(b, g); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, guestMeta), err)
	}
	g.Dir = dir
	g.Kernel = filepath.Join(dir, guestKernel)
	g.Initrd = filepath.Join(dir, guestInitrd)
	for _, p := range []string{g.Kernel, g.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// CommandError is a failed external command of the build.
type CommandError struct {
	Args   []string // the command line
	Err    error    // as returned by exec
	Output string   // its standard error, or standard output if that was empty
	Hint   string   // what to do about it, if known
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

const aptHint = "the test guest is built from Debian packages: run `apt-get update` and check that the package exists"

// builder holds the state of one build in tmp.
type builder struct {
	opts Options
	tmp  string
	out  string // tmp/out, renamed into the cache at the end
}

// log is the build's log: Options.Logger, or nowhere.
func (b *builder) log() *slog.Logger {
	if b.opts.Logger != nil {
		return b.opts.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// run runs a command in dir and returns its standard output.
func run(ctx context.Context, dir, hint string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		out := strings.TrimSpace(stderr.String())
		if out == "" {
			out = strings.TrimSpace(stdout.String())
		}
		if len(out) > 2000 {
			out = "…" + out[len(out)-2000:]
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, &CommandError{Args: args, Err: err, Output: out, Hint: hint}
	}
	return stdout.Bytes(), nil
}

func (b *builder) build(ctx context.Context) error {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: the test guest is built from Debian packages, on Debian: %w", tool, err)
		}
	}
	kpkg := b.opts.KernelPackage
	if kpkg == "" {
		var err error
		if kpkg, err = resolveKernelPackage(ctx); err != nil {
			return err
		}
	}
	debs := filepath.Join(b.tmp, "debs")
	if err := os.Mkdir(debs, 0o755); err != nil {
		return err
	}
	b.log().Info("apt-get download", "kernel", kpkg, "busybox", BusyboxPackage)
	if _, err := run(ctx, debs, aptHint, "apt-get", "download", "-q", kpkg, BusyboxPackage); err != nil {
		return err
	}
	kdeb, kver, err := extractDeb(ctx, debs, kpkg, filepath.Join(b.tmp, "kernel"))
	if err != nil {
		return err
	}
	_, bver, err := extractDeb(ctx, debs, BusyboxPackage, filepath.Join(b.tmp, "busybox"))
	if err != nil {
		return err
	}
	b.log().Info("extracted", "kernel", kpkg, "kernel_version", kver, "busybox", BusyboxPackage, "busybox_version", bver)

	kroot := filepath.Join(b.tmp, "kernel")
	vmlinuz, err := filepath.Glob(filepath.Join(kroot, "boot", "vmlinuz-*"))
	if err != nil || len(vmlinuz) != 1 {
		return fmt.Errorf("%s: want one boot/vmlinuz-*, found %d", filepath.Base(kdeb), len(vmlinuz))
	}
	release := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	if err := checkKernelConfig(filepath.Join(kroot, "boot", "config-"+release)); err != nil {
		return fmt.Errorf("%s: %w", kpkg, err)
	}
	tree, err := readModuleTree(filepath.Join(kroot, "lib", "modules", release))
	if err != nil {
		return err
	}
	mods, err := tree.loadOrder(wantModules)
	if err != nil {
		return fmt.Errorf("%s: %w", kpkg, err)
	}

	b.out = filepath.Join(b.tmp, "out")
	if err := os.Mkdir(b.out, 0o755); err != nil {
		return err
	}
	if err := os.Rename(vmlinuz[0], filepath.Join(b.out, guestKernel)); err != nil {
		return fmt.Errorf("move kernel: %w", err)
	}
	g := &Guest{
		KernelPackage:  kpkg,
		KernelVersion:  kver,
		KernelRelease:  release,
		BusyboxVersion: bver,
		Built:          time.Now().UTC().Truncate(time.Second),
	}
	for _, m := range mods {
		g.Modules = append(g.Modules, m.Name)
	}
	busybox := filepath.Join(b.tmp, "busybox", "bin", "busybox")
	if err := writeInitramfs(filepath.Join(b.out, guestInitrd), busybox, mods); err != nil {
		return err
	}
	meta, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	// guest.json last: its presence marks a complete entry.
	if err := os.WriteFile(filepath.Join(b.out, guestMeta), append(meta, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", guestMeta, err)
	}
	b.log().Info("built guest", "kernel", release, "modules", strings.Join(g.Modules, " "))
	return nil
}

// resolveKernelPackage asks apt which versioned kernel KernelMetaPackage
// depends on.
func resolveKernelPackage(ctx context.Context) (string, error) {
	out, err := run(ctx, "", aptHint, "apt-cache", "depends", KernelMetaPackage)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1], nil
		}
	}
	return "", &CommandError{
		Args:   []string{"apt-cache", "depends", KernelMetaPackage},
		Err:    errors.New("no linux-image-* dependency listed"),
		Output: strings.TrimSpace(string(out)),
		Hint:   aptHint,
	}
}

// extractDeb unpacks the downloaded .deb of pkg from debs into dst and returns
// its path and version.
func extractDeb(ctx context.Context, debs, pkg, dst string) (deb, version string, err error) {
	m, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb"))
	if len(m) != 1 {
		return "", "", fmt.Errorf("apt-get download %s: want one %s_*.deb, found %d", pkg, pkg, len(m))
	}
	deb = m[0]
	v, err := run(ctx, debs, "", "dpkg-deb", "-f", deb, "Version")
	if err != nil {
		return "", "", err
	}
	if _, err := run(ctx, debs, "", "dpkg-deb", "-x", deb, dst); err != nil {
		return "", "", err
	}
	return deb, strings.TrimSpace(string(v)), nil
}

// checkKernelConfig makes sure the kernel can boot our initramfs and talk on
// the serial console.
func checkKernelConfig(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read kernel config: %w", err)
	}
	for _, want := range []string{
		"CONFIG_BLK_DEV_INITRD=y", // initramfs
		"CONFIG_RD_GZIP=y",        // we compress it with gzip
		"CONFIG_DEVTMPFS=y",
		"CONFIG_TMPFS=y",
		"CONFIG_SERIAL_8250_CONSOLE=y",
	} {
		if !bytes.Contains(b, []byte("\n"+want+"\n")) {
			return fmt.Errorf("kernel config %s lacks %s", filepath.Base(path), want)
		}
	}
	return nil
}

// writeInitramfs writes a gzip-compressed newc cpio with busybox, the modules
// in load order and /init.
func writeInitramfs(path, busybox string, mods []module) (err error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("read busybox from %s: %w", BusyboxPackage, err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write initramfs: %w", cerr)
		}
	}()
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return err
	}
	c := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "etc/ntc", "lib", "lib/modules"} {
		c.Dir(d)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/null", 0o666, 1, 3)
	c.File("bin/busybox", 0o755, bb)
	c.Symlink("bin/sh", "busybox")
	c.File("init", 0o755, initScript)
	var list strings.Builder
	for _, m := range mods {
		body, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("read module %s: %w", m.Name, err)
		}
		c.File("lib/modules/"+m.Name+".ko", 0o644, body)
		list.WriteString(m.Name + "\n")
	}
	c.File("etc/ntc/modules", 0o644, []byte(list.String()))
	if err := c.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return f.Sync()
}
