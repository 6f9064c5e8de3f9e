package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/repo/s3copy"
	"github.com/ntc-project/ntc/repo/s3versions"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// copyOptions are pull's and upload's options.
type copyOptions struct {
	url      string // the repository on S3: --from, --to
	version  uint64
	force    bool
	endpoint string
}

// addCopyFlags adds the flags pull and upload share; urlFlag (--from or
// --to) resolves through key.
func addCopyFlags(g *globals, cmd *cobra.Command, o *copyOptions, urlFlag, key, versionHelp, forceHelp string) {
	f := cmd.Flags()
	f.StringVar(&o.url, urlFlag, "", "the repository on S3: s3://BUCKET/PREFIX")
	f.String("store", "", "this node's repository (default: the configuration's repo, or $NTC_HOME/repo)")
	f.Uint64Var(&o.version, "version", 0, versionHelp)
	f.BoolVar(&o.force, "force", false, forceHelp)
	f.StringVar(&o.endpoint, "s3-endpoint", "", "URL of an S3 server other than AWS (default: $AWS_ENDPOINT_URL)")
	g.bind(cmd, key, urlFlag)
	g.bind(cmd, "repo", "store")
	g.bind(cmd, "s3.endpoint", "s3-endpoint")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		o.url = g.v.GetString(key)
		o.endpoint = g.v.GetString("s3.endpoint")
		if key == "pull.from" {
			return runPull(cmd.Context(), g, args[0], *o)
		}
		return runUpload(cmd.Context(), g, args[0], *o)
	}
}

func newPullCommand(g *globals) *cobra.Command {
	var o copyOptions
	cmd := &cobra.Command{
		Use:   "pull SET --from s3://BUCKET/PREFIX [--store DIR]",
		Short: "Bring a version of a set from a repository on S3 to this node",
		Long: `Pull copies a version of SET (the current one, or --version N, the bucket's
number) from a repository on S3 into this node's repository, downloading
only the chunks the node lacks, each verified against its ID, and
materialises its images, so that 'ntc resume --store DIR --name SET' starts
it. The office uploads a version once ('ntc upload'); any number of nodes
pull it.

The version keeps its identity (digest, parent, the node that made it). It
becomes the node's current version when the node has none or its current
version is an ancestor; otherwise it is kept beside it and pull says so:
--force makes it current anyway. Nothing is committed if the pull fails.

DIR is this node's repository (default: the configuration's repo key, or
$NTC_HOME/repo). Credentials and region come the standard AWS way
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE, ~/.aws);
with none of those, the AWS SDK also asks the EC2 instance metadata service
(169.254.169.254): AWS_EC2_METADATA_DISABLED=true stops that.
A store other than AWS is named with --s3-endpoint (configuration key
s3.endpoint) or AWS_ENDPOINT_URL; its buckets are then addressed in the path.

Examples:
  ntc pull vm1 --from s3://vms/office
  AWS_ENDPOINT_URL=http://10.0.0.5:8333 ntc pull vm1 --from s3://vms/office --store /srv/ntc`,
		Args: cobra.ExactArgs(1),
	}
	addCopyFlags(g, cmd, &o, "from", "pull.from", "the version's number in the bucket; default: the current one",
		"make the version current even if it does not follow this node's")
	return cmd
}

// copiedJSON is what pull and upload print with --json.
type copiedJSON struct {
	Set     string      `json:"set"`
	Version uint64      `json:"version"` // its number at the destination
	Digest  repo.Digest `json:"digest"`
	Current bool        `json:"current"`
	Existed bool        `json:"existed"`
	Chunks  int         `json:"chunks"`
	Bytes   int64       `json:"bytes"`
	// Copied and CopiedBytes are what travelled: the chunks the
	// destination lacked.
	Copied      int     `json:"copied"`
	CopiedBytes int64   `json:"copied_bytes"`
	Seconds     float64 `json:"seconds"`
	Store       string  `json:"store"`
	Images      string  `json:"images,omitempty"`
}

func runPull(ctx context.Context, g *globals, set string, o copyOptions) error {
	if o.url == "" {
		return usagef("pull needs --from s3://BUCKET/PREFIX")
	}
	if err := repo.CheckName(set); err != nil {
		return usagef("set %q: %v", set, err)
	}
	start := time.Now()
	st, err := openS3(ctx, o.url, o.endpoint)
	if err != nil {
		return err
	}
	defer st.Close()
	dir := g.repoDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	r, err := ntcsync.OpenRepo(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	chunks, err := r.Nodes().OpenStore(ctx)
	if err != nil {
		return err
	}
	stats, err := s3copy.Download(ctx, s3versions.New(st), set, o.version, r.Nodes(), chunks, s3copy.Options{Force: o.force})
	if cerr := chunks.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("pull: close the chunk store: %w", cerr)
	}
	if err != nil && !errors.Is(err, repo.ErrDiverged) {
		return err
	}
	out := copiedOf(stats, time.Since(start), dir)
	if stats.Current {
		if err := r.Materialize(ctx, set, stats.Seq); err != nil {
			return fmt.Errorf("pull: version %d is committed, but its images are not written: %w", stats.Seq, err)
		}
		out.Images = r.ImagePath(set, "")
		out.Seconds = time.Since(start).Seconds()
	}
	return finishCopy(g, "pulled", out, err, fmt.Sprintf("'ntc pull %s --from %s --version N --force' makes it current", set, o.url))
}

// finishCopy prints what a pull or upload did, and returns err, a
// divergence, with what to do about it.
func finishCopy(g *globals, what string, out copiedJSON, err error, hint string) error {
	if g.json {
		if werr := writeJSON(g.stdout, out); werr != nil {
			return werr
		}
	} else {
		printCopied(g, what, out)
	}
	if err != nil {
		return fmt.Errorf("%w: kept as version %d; %s", err, out.Version, hint)
	}
	return nil
}

func copiedOf(s s3copy.Stats, d time.Duration, store string) copiedJSON {
	return copiedJSON{Set: s.Set, Version: s.Seq, Digest: s.Digest, Current: s.Current, Existed: s.Existed,
		Chunks: s.Chunks, Bytes: s.Bytes, Copied: s.Copied, CopiedBytes: s.CopiedBytes, Seconds: d.Seconds(), Store: store}
}

func printCopied(g *globals, what string, c copiedJSON) {
	state := "current"
	if !c.Current {
		state = "kept, not current"
	}
	rate := ""
	if c.Seconds > 0 {
		rate = fmt.Sprintf(", %s/s", humanBytes(int64(float64(c.CopiedBytes)/c.Seconds)))
	}
	fmt.Fprintf(g.stdout, "%s %s %s as version %d in %s (%s): %d of %d chunks copied, %s of %s in %.1fs%s\n",
		what, c.Set, c.Digest.Short(), c.Version, c.Store, state, c.Copied, c.Chunks,
		humanBytes(c.CopiedBytes), humanBytes(c.Bytes), c.Seconds, rate)
}

// openS3 opens the repository on S3 at url. An endpoint (given, or
// AWS_ENDPOINT_URL[_S3]) names a store other than AWS: its buckets are
// addressed in the path, as most such stores want.
func openS3(ctx context.Context, url, endpoint string) (*s3store.Store, error) {
	if _, _, err := s3store.ParseURL(url); err != nil {
		return nil, usagef("%v", err)
	}
	pathStyle := endpoint != "" || os.Getenv("AWS_ENDPOINT_URL") != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
	return s3store.Open(ctx, s3store.Config{URL: url, Endpoint: endpoint, PathStyle: pathStyle})
}
