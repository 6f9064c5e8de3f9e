package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/filelock"
	"github.com/ntc-project/ntc/qemu"
	"github.com/ntc-project/ntc/repo/s3repo"
	"github.com/ntc-project/ntc/repo/s3versions"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// A receiver's repository kept in a bucket is a sync.Versions.
var _ ntcsync.Versions = (*s3repo.Repo)(nil)

// isS3 reports whether a --store names a repository on S3.
func isS3(store string) bool { return strings.HasPrefix(store, "s3://") }

// s3Repo is a repository on S3 opened by a command, with its local cache.
type s3Repo struct {
	*ntcsync.Repo
	store   *s3store.Store
	release func() // the cache
	// tempCache: another process holds the repository's cache; this one
	// is removed at Close.
	tempCache bool
}

// Close closes the repository and its store (uploading what is pending)
// and releases the cache.
func (r *s3Repo) Close() error {
	err := r.Repo.Close()
	if cerr := r.store.Close(); err == nil {
		err = cerr
	}
	r.release()
	return err
}

// openS3Repo opens the repository on S3 at url to receive into and read,
// with a local cache under $NTC_HOME/cache/s3/: the chunks it reads and
// writes (so a delta's base, which a receiver reads chunk by chunk, and a
// resume's images are not downloaded again), and the images it
// materialises. One process uses a cache at a
// time: when another has it (a serve of the same bucket), a reader gets
// a temporary cache of its own, removed when it closes.
func (g *globals) openS3Repo(ctx context.Context, url, endpoint string) (*s3Repo, error) {
	if _, _, err := s3store.ParseURL(url); err != nil {
		return nil, usagef("%v", err)
	}
	cache, temp, release, err := g.s3Cache(url)
	if err != nil {
		return nil, err
	}
	pathStyle := endpoint != "" || os.Getenv("AWS_ENDPOINT_URL") != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
	st, err := s3store.Open(ctx, s3store.Config{URL: url, Endpoint: endpoint, PathStyle: pathStyle,
		CacheDir: filepath.Join(cache, "store"), CacheWrites: true})
	if err != nil {
		release()
		return nil, err
	}
	r, err := ntcsync.OpenRepoOn(filepath.Join(cache, "repo"), s3repo.New(s3versions.New(st)))
	if err != nil {
		st.Close()
		release()
		return nil, err
	}
	return &s3Repo{Repo: r, store: st, release: release, tempCache: temp}, nil
}

// s3Cache takes the cache directory of the repository at url, or, when
// another process holds it, a temporary one.
func (g *globals) s3Cache(url string) (dir string, temp bool, release func(), err error) {
	bucket, _, _ := s3store.ParseURL(url)
	base := filepath.Join(g.home(), "cache", "s3")
	dir = filepath.Join(base, bucket+"-"+chunk.Sum([]byte(url)).Short())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, nil, fmt.Errorf("cache of %s: %w", url, err)
	}
	lock, err := filelock.TryLock(filepath.Join(dir, "lock"))
	if err == nil {
		return dir, false, func() { lock.Close() }, nil
	} else if !errors.Is(err, filelock.ErrBusy) {
		return "", false, nil, fmt.Errorf("cache of %s: %w", url, err)
	}
	tmp, err := os.MkdirTemp(base, "tmp-")
	if err != nil {
		return "", false, nil, fmt.Errorf("cache of %s: %w", url, err)
	}
	return tmp, true, func() { os.RemoveAll(tmp) }, nil
}

// Values of serve --images: when a repository in a directory writes the
// image files of the versions it receives.
const (
	imagesAtCommit = "commit"    // at each commit (a resume starts at once)
	imagesOnDemand = "on-demand" // when a resume or hand-off needs them
)

// openServeRepo opens what serve receives into: the repository in a
// directory, or on S3 (--store s3://BUCKET/PREFIX, the endpoint from
// s3.endpoint). A repository on S3 hands no VM over (resumers), and
// writes its images on demand whatever images says.
func (g *globals) openServeRepo(ctx context.Context, store string, resumers int, images string) (*ntcsync.Repo, func() error, error) {
	if images != imagesAtCommit && images != imagesOnDemand {
		return nil, nil, usagef("--images %q: want %s or %s", images, imagesAtCommit, imagesOnDemand)
	}
	if !isS3(store) {
		r, err := ntcsync.OpenRepo(store)
		if err != nil {
			return nil, nil, err
		}
		if images == imagesOnDemand {
			r.ImagesOnDemand()
		}
		return r, r.Close, nil
	}
	if resumers > 0 {
		return nil, nil, usagef("--resume-allow needs a repository directory: a serve of %s does not resume VMs", store)
	}
	r, err := g.openS3Repo(ctx, store, g.v.GetString("s3.endpoint"))
	if err != nil {
		return nil, nil, err
	}
	return r.Repo, r.Close, nil
}

// addS3EndpointFlag adds --s3-endpoint (configuration key s3.endpoint) to
// a command whose --store may be s3://.
func addS3EndpointFlag(g *globals, cmd *cobra.Command) {
	cmd.Flags().String("s3-endpoint", "", "URL of an S3 server other than AWS, for --store s3://… (default: $AWS_ENDPOINT_URL)")
	g.bind(cmd, "s3.endpoint", "s3-endpoint")
}

// openReadRepo opens a repository to read: a receiver's directory (beside
// a running serve), or one on S3.
func (g *globals) openReadRepo(ctx context.Context, store string) (*ntcsync.Repo, *s3Repo, error) {
	if !isS3(store) {
		r, err := ntcsync.OpenRepoForReading(store)
		return r, nil, err
	}
	r, err := g.openS3Repo(ctx, store, g.v.GetString("s3.endpoint"))
	if err != nil {
		return nil, nil, err
	}
	return r.Repo, r, nil
}

// checkS3 opens a repository on S3 to check: the owners are its versions,
// and the store its chunks, read without a cache (what is checked is the
// bucket, not a copy on this disk).
func (g *globals) checkS3(ctx context.Context, url string) ([]chunk.Owner, *s3store.Store, error) {
	st, err := openS3(ctx, url, g.v.GetString("s3.endpoint"))
	if err != nil {
		return nil, nil, err
	}
	// The versions are read into nothing: a repository's image cache is
	// written only by Materialize.
	dir, err := os.MkdirTemp("", "ntc-check-")
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	r, err := ntcsync.OpenRepoOn(dir, s3repo.New(s3versions.New(st)))
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	owners, err := repoOwners(r)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return owners, st, nil
}

// openResumeRepo opens the repository a copy of set resumes from (see
// materializeFor for its images).
func (g *globals) openResumeRepo(ctx context.Context, store, set string) (*ntcsync.Repo, func() error, error) {
	if !isS3(store) {
		r, err := ntcsync.OpenRepoForReading(store)
		if err != nil {
			return nil, nil, err
		}
		return r, r.Close, nil
	}
	r, err := g.openS3Repo(ctx, store, g.v.GetString("s3.endpoint"))
	if err != nil {
		return nil, nil, err
	}
	if r.tempCache {
		r.Close()
		return nil, nil, fmt.Errorf("another ntc process (a serve of %s?) uses this node's cache of it, where a copy runs from: resume with another NTC_HOME", store)
	}
	return r.Repo, r.Close, nil
}

// materializeFor writes the image files of version v of set, from which a
// copy runs, unless they hold it already: a repository that 'ntc serve
// --images on-demand' receives into, or one on S3 (into its cache,
// $NTC_HOME/cache/s3/…, downloaded in a few large requests), writes them
// only now, and after an earlier resume only what changed since. It says
// on stderr what that cost.
func (g *globals) materializeFor(ctx context.Context, r *ntcsync.Repo, store, set string, v uint64) error {
	if r.ImagesHold(set, v) {
		return nil
	}
	start := time.Now()
	if err := r.Materialize(ctx, set, v); err != nil {
		return fmt.Errorf("write the images of %s version %d from %s: %w", set, v, store, err)
	}
	fmt.Fprintf(g.stderr, "ntc: wrote the images of %s version %d from the store in %.2f s\n", set, v, time.Since(start).Seconds())
	return nil
}

// adopt is capture.Adopt for a copy resumed from a repository directory.
// A copy resumed from a bucket is nobody's set here: its checkpoints start
// a node repository of their own.
func adopt(ctx context.Context, sess *qemu.Session, store, set string, seq int, node string) error {
	if isS3(store) {
		return nil
	}
	return capture.Adopt(ctx, sess, store, set, seq, node)
}
