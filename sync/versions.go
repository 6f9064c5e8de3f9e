package sync

import (
	"context"
	"fmt"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

// Versions is where a Repo keeps its sets' versions and their chunks: the
// node repository in a directory (package repo, the default) or one in an
// S3 bucket (repo/s3repo, which `ntc serve --store s3://…` wires). It is
// the receiver's plug-in point; versions are repo.Versions, with the
// commit rules of repo.Repo.Commit.
type Versions interface {
	// Sets returns the names of the sets held, sorted.
	Sets(ctx context.Context) ([]string, error)
	// Versions returns a set's versions, oldest first.
	Versions(ctx context.Context, set string) ([]*repo.Version, error)
	Version(ctx context.Context, set string, seq uint64) (*repo.Version, error)
	ByDigest(ctx context.Context, set string, d repo.Digest) (*repo.Version, error)
	// Head returns a set's current version, nil when it has none.
	Head(ctx context.Context, set string) (*repo.Version, error)
	// Newest returns the newest version held among the digests offered.
	Newest(ctx context.Context, set string, offered []repo.Digest) (*repo.Version, error)
	// Diverged returns the tips of copies that ran apart from the current
	// version.
	Diverged(ctx context.Context, set string) ([]*repo.Version, error)
	Index(ctx context.Context, set string, seq uint64, image string) (*chunk.Index, error)
	Meta(ctx context.Context, set string, seq uint64) ([]byte, error)
	// Commit stores a version whose chunks are durable in the store (see
	// repo.Repo.Commit).
	Commit(ctx context.Context, v *repo.Version, idx []*chunk.Index, meta []byte, opt repo.CommitOptions) (*repo.Committed, error)
	// Remove removes a version that is not the current one.
	Remove(ctx context.Context, set string, seq uint64) error
	SetRunner(ctx context.Context, set, node string, d repo.Digest) error

	// OpenStore opens the chunk store for writing until release.
	OpenStore(ctx context.Context) (st chunk.WriteStore, release func() error, err error)
	// Collect drops from st, what OpenStore returned, the chunks no
	// version uses.
	Collect(ctx context.Context, st chunk.WriteStore) (chunk.CompactStats, error)
}

// dirVersions are the versions of the node repository in a directory,
// which reads its files confined to it and bounded.
type dirVersions struct {
	nodes *repo.Repo
}

var _ Versions = dirVersions{}

func (d dirVersions) Sets(context.Context) ([]string, error) { return d.nodes.Sets() }

func (d dirVersions) Versions(_ context.Context, set string) ([]*repo.Version, error) {
	return d.nodes.Versions(set)
}

func (d dirVersions) Version(_ context.Context, set string, seq uint64) (*repo.Version, error) {
	return d.nodes.Version(set, seq)
}

func (d dirVersions) ByDigest(_ context.Context, set string, dg repo.Digest) (*repo.Version, error) {
	return d.nodes.ByDigest(set, dg)
}

func (d dirVersions) Head(_ context.Context, set string) (*repo.Version, error) {
	return d.nodes.Head(set)
}

func (d dirVersions) Newest(_ context.Context, set string, offered []repo.Digest) (*repo.Version, error) {
	return d.nodes.Newest(set, offered)
}

func (d dirVersions) Diverged(_ context.Context, set string) ([]*repo.Version, error) {
	return d.nodes.Diverged(set)
}

func (d dirVersions) Index(_ context.Context, set string, seq uint64, image string) (*chunk.Index, error) {
	return d.nodes.Index(set, seq, image)
}

func (d dirVersions) Meta(_ context.Context, set string, seq uint64) ([]byte, error) {
	return d.nodes.Meta(set, seq)
}

func (d dirVersions) Commit(ctx context.Context, v *repo.Version, idx []*chunk.Index, meta []byte, opt repo.CommitOptions) (*repo.Committed, error) {
	return d.nodes.Commit(ctx, v, idx, meta, opt)
}

func (d dirVersions) Remove(ctx context.Context, set string, seq uint64) error {
	return d.nodes.Remove(ctx, set, seq)
}

func (d dirVersions) SetRunner(ctx context.Context, set, node string, dg repo.Digest) error {
	return d.nodes.SetRunner(ctx, set, node, dg)
}

// OpenStore opens the pack store, waiting while another process (a
// checkpoint taken here) has it.
func (d dirVersions) OpenStore(ctx context.Context) (chunk.WriteStore, func() error, error) {
	st, err := d.nodes.OpenStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	return st, st.Close, nil
}

func (d dirVersions) Collect(ctx context.Context, st chunk.WriteStore) (chunk.CompactStats, error) {
	ps, ok := st.(*chunk.PackStore)
	if !ok {
		return chunk.CompactStats{}, fmt.Errorf("collect garbage: %T is not the repository's pack store", st)
	}
	return d.nodes.Collect(ctx, ps)
}
