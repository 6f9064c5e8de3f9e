package debimg

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testSize keeps the test's images small; the cold build is the same work.
const testSize = 1 << 30

// skipIfCannotBuild skips tb where images cannot be built at all: not root,
// or mmdebstrap absent. CI runs as root with mmdebstrap installed.
func skipIfCannotBuild(tb testing.TB) {
	tb.Helper()
	err := checkTools()
	if errors.Is(err, ErrNotRoot) {
		tb.Skip("not root: building Debian images needs root (mmdebstrap, loop mounts)")
	}
	var te *ToolError
	if errors.As(err, &te) {
		tb.Skipf("%v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// buildTB builds, or finds in the default cache, the test's pair. A cold
// build takes about a minute and a half.
func buildTB(tb testing.TB) *Pair {
	tb.Helper()
	skipIfCannotBuild(tb)
	ctx, cancel := context.WithTimeout(tb.Context(), 8*time.Minute)
	defer cancel()
	p, err := Build(ctx, Options{Size: testSize, Logger: slog.New(slog.NewTextHandler(tbWriter{tb}, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestBuild(t *testing.T) {
	p := buildTB(t)
	t.Logf("pair in %s, built in %s: %d packages installed, %d bytes changed in %d ranges, oracle %d bytes",
		p.Dir, p.BuildTime, len(p.Installed), p.ChangedBytes, len(p.Changed), p.Oracle)

	checkReleased(t, p)
	for _, img := range []string{p.Old, p.New} {
		if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn %s: %v\n%s", img, err, out)
		}
	}
	for _, file := range []string{"/usr/bin/python3", "/usr/bin/curl", "/usr/bin/less"} {
		if !hasFile(t, p.New, file) {
			t.Errorf("new image has no %s", file)
		}
		if hasFile(t, p.Old, file) {
			t.Errorf("old image already has %s", file)
		}
	}
	if !hasFile(t, p.New, "/var/cache/apt/archives") || !hasDeb(t, p.New) {
		t.Error("new image has no downloaded .deb in /var/cache/apt/archives: apt-get clean ran?")
	}
	for _, pkg := range DefaultPackages {
		if !slices.ContainsFunc(p.Installed, func(s string) bool { return strings.HasPrefix(s, pkg+" ") }) {
			t.Errorf("Installed lacks %s: %v", pkg, p.Installed)
		}
	}

	if ref := referenceChanged(t, p.Old, p.New); !slices.Equal(p.Changed, ref) {
		t.Errorf("Changed has %d ranges (%d bytes); a full comparison finds %d (%d bytes)",
			len(p.Changed), p.ChangedBytes, len(ref), sumLen(ref))
	}
	if p.ChangedBytes != sumLen(p.Changed) {
		t.Errorf("ChangedBytes = %d, Changed sums to %d", p.ChangedBytes, sumLen(p.Changed))
	}
	if p.ChangedBytes < 40<<20 || p.ChangedBytes > p.Size/2 {
		t.Errorf("ChangedBytes = %d: want tens to hundreds of MB", p.ChangedBytes)
	}
	if p.Oracle <= 0 || p.Oracle >= p.ChangedBytes {
		t.Errorf("Oracle = %d for %d changed bytes", p.Oracle, p.ChangedBytes)
	}
	var cw countWriter
	if err := p.WriteChangedBlocks(&cw); err != nil {
		t.Fatal(err)
	}
	if cw.n != p.ChangedBytes {
		t.Errorf("WriteChangedBlocks wrote %d bytes, want ChangedBytes %d", cw.n, p.ChangedBytes)
	}

	var log strings.Builder // a cached Pair logs nothing: no step ran
	again, err := Build(t.Context(), Options{Size: testSize, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if log.Len() > 0 {
		t.Errorf("second Build ran build steps (cache missed):\n%s", log.String())
	}
	if again.Dir != p.Dir || again.ChangedBytes != p.ChangedBytes {
		t.Errorf("second Build returned %s (%d changed), want the cached %s (%d)", again.Dir, again.ChangedBytes, p.Dir, p.ChangedBytes)
	}
}

// TestInstallCanceled cancels the install step while it runs and checks that
// nothing stays mounted or attached.
func TestInstallCanceled(t *testing.T) {
	p := buildTB(t)
	tmp := t.TempDir()
	img := filepath.Join(tmp, "img")
	if out, err := exec.Command("cp", "--sparse=always", p.Old, img).CombinedOutput(); err != nil {
		t.Fatalf("copy old image: %v\n%s", err, out)
	}
	o, err := Options{Size: testSize}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	b := &builder{opts: o, tmp: tmp}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	err = b.install(ctx, img)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("install canceled after 4s: %v, want context.DeadlineExceeded", err)
	}
	t.Log(err)
	if devs, err := loopDevices(t.Context(), img); err != nil || len(devs) > 0 {
		t.Errorf("loop devices left on the image: %v %v", devs, err)
	}
	if m, err := mountedUnder(tmp); err != nil || m != "" {
		t.Errorf("left mounted: %q %v", m, err)
	}
	if err := removeBuildDir(tmp); err != nil {
		t.Error(err)
	}
}

// checkReleased fails tb if a loop device or a mount holds p's images.
func checkReleased(tb testing.TB, p *Pair) {
	tb.Helper()
	for _, img := range []string{p.Old, p.New} {
		if devs, err := loopDevices(tb.Context(), img); err != nil || len(devs) > 0 {
			tb.Errorf("loop devices on %s: %v %v", img, devs, err)
		}
	}
	if m, err := mountedUnder(p.Dir); err != nil || m != "" {
		tb.Errorf("mounted in the cache entry: %q %v", m, err)
	}
}

// hasFile reports whether path exists in the ext4 image img, read with
// debugfs without mounting.
func hasFile(tb testing.TB, img, path string) bool {
	tb.Helper()
	out, err := exec.Command("debugfs", "-R", "stat "+path, img).CombinedOutput()
	if err != nil {
		tb.Fatalf("debugfs stat %s in %s: %v\n%s", path, img, err, out)
	}
	return strings.Contains(string(out), "Inode:") && !strings.Contains(string(out), "File not found")
}

// hasDeb reports whether /var/cache/apt/archives in img holds a .deb.
func hasDeb(tb testing.TB, img string) bool {
	tb.Helper()
	out, err := exec.Command("debugfs", "-R", "ls /var/cache/apt/archives", img).CombinedOutput()
	if err != nil {
		tb.Fatalf("debugfs ls in %s: %v\n%s", img, err, out)
	}
	return strings.Contains(string(out), ".deb")
}

func TestParseSource(t *testing.T) {
	tests := []struct {
		line, uri, suite string
		ok               bool
	}{
		{"deb http://deb.debian.org/debian bookworm main", "http://deb.debian.org/debian", "bookworm", true},
		{"deb [arch=amd64 signed-by=/k.gpg] http://m/debian trixie main contrib", "http://m/debian", "trixie", true},
		{"deb [trusted=yes] http://m/d sid main", "http://m/d", "sid", true},
		{"deb-src http://m/d sid main", "", "", false},
		{"deb http://m/d", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		uri, suite, err := parseSource(tt.line)
		if (err == nil) != tt.ok || uri != tt.uri || suite != tt.suite {
			t.Errorf("parseSource(%q) = %q, %q, %v", tt.line, uri, suite, err)
		}
	}
}

func TestRecipeKey(t *testing.T) {
	key := func(o Options) string {
		t.Helper()
		o.CacheDir = "/unused"
		o, err := o.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		return recipeKey(o)
	}
	def := key(Options{})
	if got := key(Options{Size: DefaultSize, Suite: DefaultSuite, Packages: DefaultPackages}); got != def {
		t.Errorf("defaults spelt out: key %s, want %s", got, def)
	}
	if got := key(Options{Packages: []string{"less", "curl", "python3"}}); got != def {
		t.Errorf("packages reordered: key %s, want %s", got, def)
	}
	seen := map[string]bool{def: true}
	for _, o := range []Options{
		{Size: 1 << 30},
		{Suite: "trixie"},
		{Variant: "apt"},
		{Packages: []string{"python3"}},
		{Sources: []string{"deb http://example.org/debian bookworm main"}},
	} {
		k := key(o)
		if seen[k] {
			t.Errorf("%+v: key %s already used", o, k)
		}
		seen[k] = true
	}
	for _, bad := range []Options{{Size: 1000}, {Size: -4096}, {Packages: []string{"-o", "x"}}, {Packages: []string{"a b"}}} {
		bad.CacheDir = "/unused"
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestToolError(t *testing.T) {
	err := error(&ToolError{Tool: "mmdebstrap", Package: "mmdebstrap", Err: exec.ErrNotFound})
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "apt-get install mmdebstrap") {
		t.Errorf("ToolError %q does not say what to install, or lost its cause", err)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:         "/a/b",
		`/a\040b`:      "/a b",
		`/tab\011x\\`:  "/tab\tx\\\\",
		`/short\04`:    `/short\04`,
		`/not\999oct`:  `/not\999oct`,
		`/end\134`:     `/end\`,
		`/two\040\040`: "/two  ",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckMirror(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debian/dists/bookworm/InRelease" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // nothing listens there any more
	tests := []struct {
		source string
		want   error
	}{
		{"deb " + srv.URL + "/debian bookworm main", nil},
		{"deb [trusted=yes] " + srv.URL + "/debian/ bookworm main", nil},
		{"deb " + srv.URL + "/debian trixie main", ErrMirrorUnreachable},
		{"deb " + closed.URL + "/debian bookworm main", ErrMirrorUnreachable},
	}
	for _, tt := range tests {
		err := checkMirror(t.Context(), tt.source)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("checkMirror(%q) = %v, want %v", tt.source, err, tt.want)
		}
	}
}
