// Package s3copy copies one version of a set between a node's repository
// (package repo, its chunks in a chunk.PackStore) and a repository on S3
// (chunk/s3store's chunks, repo/s3versions' version records), in either
// direction: Upload from the node to the bucket, Download from the bucket
// to the node. An office uploads a version once; any number of nodes
// download it from the bucket, so the office's uplink carries it once.
//
// Vocabulary:
//
//   - The source holds the version; the destination is asked, in batches,
//     which of the version's chunks it lacks (an S3 store knows its chunks
//     from its pack listings, a pack store from its map: no request per
//     chunk), and only those are copied. Every chunk is verified against
//     its ID when read from the source.
//   - The version keeps its identity: the same record (set, digest, parent,
//     node, creation time, images, metadata digest), the same indexes and
//     metadata. The destination checks the digest again before committing.
//   - The destination's current version moves only on a fast-forward: when
//     it has none, or its current version is an ancestor of the one copied
//     (by the parent links either side knows); otherwise the version is
//     kept beside it without becoming current (ErrDiverged), unless Force.
//     The bucket knows the parent links of the versions uploaded to it
//     only: a node that pulls v3 when v2 was never uploaded cannot tell
//     that v3 follows its v1, and keeps it beside (upload every version a
//     puller may hold, or pull with Force).
//   - Nothing is visible at the destination before the commit: chunks
//     copied before a failure are stored but named by no version (a
//     collection removes them), and the commit itself is one conditional
//     write on S3 or one rename on the node.
//
// The package does not materialise images (package sync does), does not
// decide which versions to keep, and does not move versions between two
// nodes directly (package sync does).
package s3copy
