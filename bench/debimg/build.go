package debimg

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed install.sh
var installScript []byte

// ErrNotRoot is returned by Build when a Pair has to be built and the process
// is not root: mmdebstrap, loop mounts and chroot need it.
var ErrNotRoot = errors.New("building the Debian images needs root (mmdebstrap, loop mounts, chroot): run as root, or use a cache that has them")

// ErrMirrorUnreachable is returned by Build when the Debian mirror does not
// answer.
var ErrMirrorUnreachable = errors.New("Debian mirror unreachable")

// ToolError is a command Build needs that is not installed.
type ToolError struct {
	Tool    string // the command, e.g. mmdebstrap
	Package string // the Debian package that has it
	Err     error
}

func (e *ToolError) Error() string {
	return fmt.Sprintf("%s not found (%v): install Debian's %s package: apt-get install %s",
		e.Tool, e.Err, e.Package, e.Package)
}

func (e *ToolError) Unwrap() error { return e.Err }

// tools are the commands a build runs, with the Debian package of each.
var tools = [][2]string{
	{"mmdebstrap", "mmdebstrap"},
	{"mkfs.ext4", "e2fsprogs"},
	{"e2fsck", "e2fsprogs"},
	{"unshare", "util-linux"},
	{"mountpoint", "util-linux"},
	{"mount", "mount"},
	{"losetup", "mount"},
	{"chroot", "coreutils"},
	{"cp", "coreutils"},
	{"zstd", "zstd"},
}

// checkTools says why this process cannot build: not root, or a tool missing.
func checkTools() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t[0]); err != nil {
			return &ToolError{Tool: t[0], Package: t[1], Err: err}
		}
	}
	return nil
}

// checkMirror asks the mirror of the one-line apt source for the release
// file of its suite.
func checkMirror(ctx context.Context, source string) error {
	uri, suite, err := parseSource(source)
	if err != nil {
		return err
	}
	url := strings.TrimSuffix(uri, "/") + "/dists/" + suite + "/InRelease"
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return fmt.Errorf("apt source %q: %w", source, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w (check the network, or set the apt sources to a mirror you can reach)", ErrMirrorUnreachable, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HEAD %s: %s (check the suite and the mirror's URL)", ErrMirrorUnreachable, url, resp.Status)
	}
	return nil
}

// parseSource returns the URI and suite of a one-line apt source such as
// "deb [signed-by=…] http://deb.debian.org/debian bookworm main".
func parseSource(line string) (uri, suite string, err error) {
	f := strings.Fields(line)
	if len(f) > 0 && f[0] == "deb" {
		f = f[1:]
		if len(f) > 0 && strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 {
			return f[0], f[1], nil
		}
	}
	return "", "", fmt.Errorf("apt source %q: want \"deb URI SUITE COMPONENT...\"", line)
}

// CommandError is a failed external command of the build.
type CommandError struct {
	Args   []string // the command line
	Err    error    // as returned by exec
	Output string   // the end of what it printed
	Hint   string   // what to do about it, if known
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Output != "" {
		msg += ":\n" + e.Output
	}
	if e.Hint != "" {
		msg += "\n(" + e.Hint + ")"
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

const aptHint = "the images are built from Debian packages: check the mirror, the suite and the package names"

// builder holds the state of one build in tmp.
type builder struct {
	opts  Options // defaults filled in
	tmp   string
	out   string // tmp/out, renamed into the cache at the end
	start time.Time
}

// step logs a build step at info level, with the time since the build
// began; nowhere without Options.Logger.
func (b *builder) step(msg string, args ...any) {
	if b.opts.Logger != nil {
		b.opts.Logger.Info(msg, append(args, "elapsed", time.Since(b.start).Round(100*time.Millisecond))...)
	}
}

// run runs a command with its output going to the log file tmp/name.log,
// whose end a failure carries.
func (b *builder) run(ctx context.Context, name, hint string, args ...string) error {
	logPath := filepath.Join(b.tmp, name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout = log
	cmd.Stderr = log
	// If this process dies, so does the command; with isolate, so does
	// everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return &CommandError{Args: args, Err: err, Output: tail(logPath, 40), Hint: hint}
	}
	return nil
}

// isolate prefixes a command line so that it runs in a private mount and
// PID namespace: its mounts are invisible outside and are undone, and its
// processes killed, when it ends or is killed.
func isolate(args ...string) []string {
	return append([]string{"unshare", "--mount", "--propagation", "private",
		"--pid", "--fork", "--kill-child", "--mount-proc", "--"}, args...)
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (b *builder) build(ctx context.Context) error {
	b.start = time.Now()
	o := b.opts
	b.out = filepath.Join(b.tmp, "out")
	if err := os.Mkdir(b.out, 0o755); err != nil {
		return err
	}
	oldImg := filepath.Join(b.out, oldImage)
	newImg := filepath.Join(b.out, newImage)

	root := filepath.Join(b.tmp, "root")
	b.step("mmdebstrap", "variant", o.Variant, "suite", o.Suite, "sources", strings.Join(o.Sources, "; "))
	args := []string{"mmdebstrap", "--mode=root", "--format=directory", "--variant=" + o.Variant,
		// A system in use has current package lists, translations included
		// (mmdebstrap's own apt configuration leaves those out).
		"--skip=cleanup/apt/lists",
		`--customize-hook=chroot "$1" apt-get -q -o Acquire::Languages=environment update`,
		`--customize-hook=echo debimg >"$1/etc/hostname"`,
		o.Suite, root}
	if err := b.run(ctx, "mmdebstrap", aptHint, isolate(append(args, o.Sources...)...)...); err != nil {
		return err
	}

	b.step("mkfs.ext4 -d", "size_mib", o.Size>>20)
	if err := createSparse(oldImg, o.Size); err != nil {
		return err
	}
	if err := b.run(ctx, "mkfs", "", "mkfs.ext4", "-q", "-F", "-b", strconv.Itoa(BlockSize), "-L", "debimg",
		"-U", fsUUID, "-E", "lazy_itable_init=0,lazy_journal_init=0,hash_seed="+fsUUID,
		"-d", root, oldImg); err != nil {
		return err
	}
	if err := removeBuildDir(root); err != nil {
		return err
	}
	if err := b.run(ctx, "fsck-old", "", "e2fsck", "-fn", oldImg); err != nil {
		return err
	}

	b.step("copy, then apt-get install", "packages", strings.Join(o.Packages, " "))
	if err := b.run(ctx, "copy", "", "cp", "--sparse=always", "--reflink=auto", oldImg, newImg); err != nil {
		return err
	}
	if err := b.install(ctx, newImg); err != nil {
		return err
	}
	if err := b.run(ctx, "fsck-new", "", "e2fsck", "-fn", newImg); err != nil {
		return err
	}
	installed, err := newPackages(filepath.Join(b.tmp, "before"), filepath.Join(b.tmp, "after"))
	if err != nil {
		return err
	}
	b.step("installed", "packages", len(installed))

	changed, err := ChangedBlocks(ctx, oldImg, newImg)
	if err != nil {
		return err
	}
	nf, err := os.Open(newImg)
	if err != nil {
		return err
	}
	oracle, err := CompressedSize(ctx, nf, changed)
	nf.Close()
	if err != nil {
		return err
	}
	p := &Pair{
		Size:          o.Size,
		Suite:         o.Suite,
		Variant:       o.Variant,
		Sources:       o.Sources,
		Packages:      o.Packages,
		Installed:     installed,
		Changed:       changed,
		ChangedBytes:  sumLen(changed),
		Oracle:        oracle,
		OracleCommand: strings.Join(OracleCommand, " "),
		Built:         time.Now().UTC().Truncate(time.Second),
		BuildTime:     time.Since(b.start).Round(time.Millisecond),
	}
	b.step("compared", "changed_bytes", p.ChangedBytes, "ranges", len(changed), "compressed_bytes", oracle)
	meta, err := json.Marshal(p)
	if err != nil {
		return err
	}
	// pair.json last: its presence marks a complete entry.
	if err := os.WriteFile(filepath.Join(b.out, pairMeta), append(meta, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", pairMeta, err)
	}
	return nil
}

// install runs install.sh on img, leaving dpkg's package lists in
// tmp/before and tmp/after, and returns once no loop device holds img.
func (b *builder) install(ctx context.Context, img string) error {
	script := filepath.Join(b.tmp, "install.sh")
	if err := os.WriteFile(script, installScript, 0o755); err != nil {
		return err
	}
	mnt := filepath.Join(b.tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return err
	}
	err := b.run(ctx, "install", aptHint, isolate(append([]string{"sh", script, img, mnt, b.tmp}, b.opts.Packages...)...)...)
	// The namespace is gone, but its loop device may outlive it a moment.
	if lerr := waitLoopReleased(context.WithoutCancel(ctx), img); err == nil {
		err = lerr
	}
	return err
}

// fsUUID is the file system UUID and directory hash seed of every image, so
// that builds differ only where their content does.
const fsUUID = "6e7c0de6-0000-4000-8000-00000000deb1"

// createSparse creates an empty file of size bytes with no data blocks.
func createSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("size %s: %w", path, err)
	}
	return f.Close()
}

// newPackages returns the lines of after that are not in before.
func newPackages(before, after string) ([]string, error) {
	read := func(path string) ([]string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read dpkg's package list: %w", err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n"), nil
	}
	was, err := read(before)
	if err != nil {
		return nil, err
	}
	is, err := read(after)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range is {
		if p != "" && !slices.Contains(was, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitLoopReleased waits up to 30 seconds for the loop devices backed by img
// to go, then detaches any left.
func waitLoopReleased(ctx context.Context, img string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		devs, err := loopDevices(ctx, img)
		if err != nil || len(devs) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			for _, d := range devs {
				exec.Command("losetup", "-d", d).Run()
			}
			if devs, _ := loopDevices(context.Background(), img); len(devs) > 0 {
				return fmt.Errorf("loop devices %s still hold %s: detach them with losetup -d", strings.Join(devs, " "), img)
			}
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// loopDevices lists the loop devices backed by img.
func loopDevices(ctx context.Context, img string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "losetup", "-n", "-O", "NAME", "-j", img).Output()
	if err != nil {
		return nil, fmt.Errorf("losetup -j %s: %w", img, err)
	}
	return strings.Fields(string(out)), nil
}

// removeBuildDir removes a build directory, unless something is mounted
// inside it (builds mount only in their own namespaces, so that would be
// someone else's doing, and removing would reach into the mount).
func removeBuildDir(dir string) error {
	if m, err := mountedUnder(dir); err != nil {
		return err
	} else if m != "" {
		return fmt.Errorf("not removing %s: %s is mounted inside it; unmount it first", dir, m)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove Debian image build directory: %w", err)
	}
	return nil
}

// mountedUnder returns a mount point of this process's namespace at or below
// dir, or "".
func mountedUnder(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("list mounts: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		m := unescapeMount(f[4])
		if m == dir || strings.HasPrefix(m, dir+"/") {
			return m, nil
		}
	}
	return "", nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				out = append(out, v)
				i += 3
				continue
			}
		}
		out = append(out, s[i])
	}
	return string(out)
}
