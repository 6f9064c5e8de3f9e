package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/repo/s3copy"
	"github.com/ntc-project/ntc/repo/s3versions"
	ntcsync "github.com/ntc-project/ntc/sync"
)

func newUploadCommand(g *globals) *cobra.Command {
	var o copyOptions
	cmd := &cobra.Command{
		Use:   "upload SET --to s3://BUCKET/PREFIX [--store DIR]",
		Short: "Copy a version of a set from this node to a repository on S3",
		Long: `Upload copies a version of SET (the current one, or --version N) from this
node's repository (where 'ntc checkpoint --out DIR --name SET' and 'ntc
serve' put versions) to a repository on S3, sending only the chunks the
bucket lacks, then commits it there with one conditional write. The office
uploads once; every other node pulls from the bucket ('ntc pull'), so the
office's uplink carries each version once.

The version keeps its identity (digest, parent, node). It becomes the
bucket's current version when the set has none there or its current version
is an ancestor (by the lineage this node knows); otherwise it is kept beside
it: --force makes it current anyway.

DIR defaults to the configuration's repo key, or $NTC_HOME/repo. It may be
read while a checkpoint writes to it. Credentials and the endpoint are found
as for 'ntc pull' (see 'ntc pull --help': without AWS credentials the SDK
asks the EC2 instance metadata service; AWS_EC2_METADATA_DISABLED=true stops
that).

Examples:
  ntc upload vm1 --to s3://vms/office --store /srv/ckpt
  ntc upload vm1 --to s3://vms/office --s3-endpoint http://10.0.0.5:8333`,
		Args: cobra.ExactArgs(1),
	}
	addCopyFlags(g, cmd, &o, "to", "upload.to", "the version's number here; default: the current one",
		"make the version current in the bucket even if it does not follow the bucket's")
	return cmd
}

func runUpload(ctx context.Context, g *globals, set string, o copyOptions) error {
	if o.url == "" {
		return usagef("upload needs --to s3://BUCKET/PREFIX")
	}
	if err := repo.CheckName(set); err != nil {
		return usagef("set %q: %v", set, err)
	}
	start := time.Now()
	stats, err := upload(ctx, g.repoDir(), set, o)
	if err != nil && !errors.Is(err, repo.ErrDiverged) {
		return err
	}
	out := copiedOf(stats, time.Since(start), o.url)
	return finishCopy(g, "uploaded", out, err, fmt.Sprintf("'ntc upload %s --to %s --force' makes it current in the bucket", set, o.url))
}

// upload copies version o.version of set (0: the current one) from the node
// repository in dir to the bucket at o.url.
func upload(ctx context.Context, dir, set string, o copyOptions) (s3copy.Stats, error) {
	r, err := ntcsync.OpenRepoForReading(dir)
	if err != nil {
		return s3copy.Stats{}, err
	}
	defer r.Close()
	chunks, err := chunk.OpenPackStoreReadOnly(dir)
	if err != nil {
		return s3copy.Stats{}, err
	}
	defer chunks.Close()
	st, err := openS3(ctx, o.url, o.endpoint)
	if err != nil {
		return s3copy.Stats{}, err
	}
	stats, err := s3copy.Upload(ctx, r.Nodes(), chunks, s3versions.New(st), set, o.version, s3copy.Options{Force: o.force})
	if cerr := st.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("upload: %w", cerr)
	}
	return stats, err
}
