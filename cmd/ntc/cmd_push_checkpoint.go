package main

import (
	"context"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/replicate"
	ntcsync "github.com/ntc-project/ntc/sync"
)

// checkpointVersion is a checkpoint ready to push (replicate.Version) in
// the shape the VM demo (cmd_demo.go) takes it; once the demo calls
// replicate.OpenVersion itself, this file goes.
type checkpointVersion struct {
	repo    *capture.Repository
	seq     int
	images  []ntcsync.Image
	patched []string
}

// openCheckpointVersion reads checkpoint seq (0: the newest) of the capture
// repository in dir as a version: replicate.OpenVersion.
func openCheckpointVersion(ctx context.Context, dir string, seq int, prev map[string]*chunk.Index) (*checkpointVersion, error) {
	v, err := replicate.OpenVersion(ctx, dir, seq, prev)
	if err != nil {
		return nil, err
	}
	return &checkpointVersion{repo: v.Repo, seq: v.Seq, images: v.Images, patched: v.Patched}, nil
}
