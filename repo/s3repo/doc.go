// Package s3repo is a node repository's sets of versions kept in an S3
// bucket (repo/s3versions, beside the chunks of a chunk/s3store), with the
// methods and the rules of package repo: versions are repo.Versions, a
// commit moves the current version on a fast-forward (or when forced) and
// otherwise keeps the version beside it (repo.ErrDiverged). It is what an
// `ntc serve --store s3://BUCKET/PREFIX` receives into, so that several
// receivers on several machines share one bucket.
//
// Vocabulary:
//
//   - A version's number (Seq) is the bucket's: the one its set's head
//     gave it, the same for every receiver of the bucket.
//   - Ancestry is decided from the parent links the set's head lists and
//     those the version's maker sent (repo.CommitOptions.Lineage): the
//     head keeps no lineage of removed versions, so a sender that pushes
//     after its base was pruned sends the links back to a version both
//     hold, as it does to a local receiver.
//   - A commit is one conditional swap of the set's head
//     (s3versions.Sets.Commit): of receivers committing the same set at
//     once, the one that loses reads the head again and decides again.
//
// What it does not do: it records no runner of a set (hand-offs go
// through local repositories), keeps no lineage beyond the heads, and
// does not materialise images (package sync does, into a local cache).
package s3repo
