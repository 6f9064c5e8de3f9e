package debimg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/internal/filelock"
)

// recipeVersion changes whenever the way a Pair is built changes in a way the
// options and install.sh do not show, so old cache entries are not reused.
const recipeVersion = "1"

// Defaults of Options.
const (
	DefaultSize    = 2 << 30
	DefaultSuite   = "bookworm"
	DefaultVariant = "minbase"
)

// DefaultPackages are installed into New when Options.Packages is empty: on
// bookworm, 40 packages with their dependencies and recommendations, 13 MB to
// download and 41 MB installed.
var DefaultPackages = []string{"python3", "curl", "less"}

// DefaultSources returns the apt sources of a Debian release as a user's
// system has them: the release, its updates and its security updates, main
// only, from deb.debian.org.
func DefaultSources(suite string) []string {
	return []string{
		"deb http://deb.debian.org/debian " + suite + " main",
		"deb http://deb.debian.org/debian " + suite + "-updates main",
		"deb http://deb.debian.org/debian-security " + suite + "-security main",
	}
}

// Options configure [Build]. The zero value builds the default Pair.
type Options struct {
	// CacheDir holds built pairs. Empty means $NTC_CACHE/debimg if NTC_CACHE
	// is set, else ntc/debimg under the user's cache directory
	// (~/.cache/ntc/debimg); see [DefaultCacheDir].
	CacheDir string
	// Size of both images in bytes, a multiple of BlockSize; 0 means
	// DefaultSize.
	Size int64
	// Suite is the Debian release; empty means DefaultSuite.
	Suite string
	// Variant is mmdebstrap's --variant for Old; empty means DefaultVariant.
	Variant string
	// Sources are the one-line apt sources Old is bootstrapped from and
	// keeps in /etc/apt/sources.list; empty means DefaultSources(Suite).
	Sources []string
	// Packages are installed into New; empty means DefaultPackages.
	Packages []string
	// Logger, if set, is told each build step (info, with the time since
	// the build began as "elapsed"); nil discards. A cached Pair logs
	// nothing.
	Logger *slog.Logger
}

// withDefaults returns opts with empty fields filled in.
func (o Options) withDefaults() (Options, error) {
	if o.CacheDir == "" {
		c, err := DefaultCacheDir()
		if err != nil {
			return o, err
		}
		o.CacheDir = c
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Size < 0 || o.Size%BlockSize != 0 {
		return o, fmt.Errorf("debian image size %d: want a positive multiple of %d", o.Size, BlockSize)
	}
	if o.Suite == "" {
		o.Suite = DefaultSuite
	}
	if o.Variant == "" {
		o.Variant = DefaultVariant
	}
	if len(o.Sources) == 0 {
		o.Sources = DefaultSources(o.Suite)
	}
	if len(o.Packages) == 0 {
		o.Packages = DefaultPackages
	}
	for _, p := range o.Packages {
		if p == "" || strings.HasPrefix(p, "-") || strings.ContainsAny(p, " \t\n") {
			return o, fmt.Errorf("package name %q: want a Debian package name", p)
		}
	}
	return o, nil
}

// DefaultCacheDir returns where pairs are cached when Options.CacheDir is
// empty: $NTC_CACHE/debimg, else ntc/debimg under os.UserCacheDir.
func DefaultCacheDir() (string, error) {
	if c := os.Getenv("NTC_CACHE"); c != "" {
		return filepath.Join(c, "debimg"), nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory for the Debian images (set NTC_CACHE): %w", err)
	}
	return filepath.Join(c, "ntc", "debimg"), nil
}

// Pair is a built pair of images.
type Pair struct {
	Dir string `json:"-"` // the cache entry holding the files below
	Old string `json:"-"` // path of the raw ext4 image before the change
	New string `json:"-"` // path of the raw ext4 image after it

	Size     int64    `json:"size"` // of each image, in bytes
	Suite    string   `json:"suite"`
	Variant  string   `json:"variant"`
	Sources  []string `json:"sources"`
	Packages []string `json:"packages"` // as asked for in Options.Packages
	// Installed lists the packages New has and Old has not, as
	// "name version", sorted: Packages with what they pulled in.
	Installed []string `json:"installed"`

	Changed      []Range `json:"changed"`       // blocks that differ, merged
	ChangedBytes int64   `json:"changed_bytes"` // total length of Changed
	// Oracle is the size of the changed blocks' New content compressed by
	// OracleCommand.
	Oracle        int64  `json:"oracle"`
	OracleCommand string `json:"oracle_command"`
	// DedupOracle is the size of New's new blocks ([NewBlocks]) compressed
	// by OracleCommand as one stream: the least a tool that deduplicates
	// against all of Old must send ([DedupOracle]).
	DedupOracle int64 `json:"dedup_oracle,omitempty"`

	Built     time.Time     `json:"built"`
	BuildTime time.Duration `json:"build_time"` // of the cold build
}

// WriteChangedBlocks writes New's content in Changed, in order, to w: the
// input of the oracle, for callers that compress it another way.
func (p *Pair) WriteChangedBlocks(w io.Writer) error {
	f, err := os.Open(p.New)
	if err != nil {
		return err
	}
	defer f.Close()
	return WriteBlocks(w, f, p.Changed)
}

const (
	pairMeta = "pair.json"
	oldImage = "old.img"
	newImage = "new.img"
)

// recipeKey names the cache entry for opts (with defaults filled in): it
// changes with anything that changes what is built.
func recipeKey(o Options) string {
	h := sha256.New()
	pkgs := slices.Clone(o.Packages)
	slices.Sort(pkgs)
	fmt.Fprintf(h, "recipe %s\nsize %d\nsuite %s\nvariant %s\nsources %s\npackages %s\n",
		recipeVersion, o.Size, o.Suite, o.Variant, strings.Join(o.Sources, "|"), strings.Join(pkgs, " "))
	h.Write(installScript)
	return fmt.Sprintf("%s-%s-%dM-%s", o.Suite, o.Variant, o.Size>>20, hex.EncodeToString(h.Sum(nil))[:12])
}

// Build returns the Pair for opts, building it on first use; a cached Pair
// is returned without running anything. Builds are serialised across
// processes by a lock file in the cache directory and become visible by an
// atomic rename, so concurrent callers get one build.
//
// A cold build takes two to three minutes, most of it downloading packages,
// and needs root ([ErrNotRoot]), the tools ([ToolError] says which Debian
// package to install) and the mirror of the first source
// ([ErrMirrorUnreachable]). A failed command is a *CommandError naming it,
// with the end of its output.
func Build(ctx context.Context, opts Options) (*Pair, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(o.CacheDir, recipeKey(o))
	if p, err := loadPair(dir); err == nil {
		return p, addDedupOracle(ctx, p)
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("create Debian image cache: %w", err)
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(o.CacheDir, ".lock"), "another process building the Debian images")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if p, err := loadPair(dir); err == nil {
		return p, addDedupOracle(ctx, p) // another process built it while we waited
	}
	// Builds happen under the lock, so a leftover build directory is from a
	// build that died.
	old, _ := filepath.Glob(filepath.Join(o.CacheDir, ".build-*"))
	for _, d := range old {
		if err := removeBuildDir(d); err != nil {
			return nil, err
		}
	}
	if err := checkMirror(ctx, o.Sources[0]); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(o.CacheDir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("create Debian image build directory: %w", err)
	}
	defer removeBuildDir(tmp)
	b := &builder{opts: o, tmp: tmp}
	if err := b.build(ctx); err != nil {
		return nil, fmt.Errorf("build Debian images: %w", err)
	}
	os.RemoveAll(dir) // an incomplete entry (no pair.json) from a crash
	if err := os.Rename(b.out, dir); err != nil {
		return nil, fmt.Errorf("install built Debian images: %w", err)
	}
	p, err := loadPair(dir)
	if err != nil {
		return nil, err
	}
	return p, addDedupOracle(ctx, p)
}

// addDedupOracle computes p.DedupOracle for a cache entry made before it
// was recorded, and records it in the entry's pair.json (replaced
// atomically; the images are not touched).
func addDedupOracle(ctx context.Context, p *Pair) error {
	if p.DedupOracle != 0 {
		return nil
	}
	n, err := DedupOracle(ctx, p.Old, p.New)
	if err != nil {
		return fmt.Errorf("dedup oracle of the Debian images: %w", err)
	}
	p.DedupOracle = n
	meta, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(p.Dir, pairMeta), 0o644, append(meta, '\n'))
}

// loadPair reads a complete cache entry.
func loadPair(dir string) (*Pair, error) {
	b, err := os.ReadFile(filepath.Join(dir, pairMeta))
	if err != nil {
		return nil, err
	}
	p := new(Pair)
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, pairMeta), err)
	}
	p.Dir = dir
	p.Old = filepath.Join(dir, oldImage)
	p.New = filepath.Join(dir, newImage)
	for _, img := range []string{p.Old, p.New} {
		fi, err := os.Stat(img)
		if err != nil {
			return nil, err
		}
		if fi.Size() != p.Size {
			return nil, fmt.Errorf("%s is %d bytes, want %d", img, fi.Size(), p.Size)
		}
	}
	return p, nil
}
