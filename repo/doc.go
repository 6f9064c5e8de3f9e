// Package repo is one node's repository: a chunk store and named sets of
// versions, with the lineage that lets two nodes find the newest version
// both hold and tell a fast-forward from a divergence.
//
// # Vocabulary
//
//   - Set: what one machine's versions are kept under (a VM's name).
//   - Version: a set's images (disks, RAM blocks, device state, plain files)
//     as chunk indexes, plus opaque metadata, committed as one. A version has
//     a local number (Seq: the order it was committed here) and an identity
//     that is the same on every node: its Digest, the BLAKE3 of a canonical
//     encoding of the set, the parent's digest, the node that made it, the
//     instant it was made, each image's name, size and index digest, and the
//     metadata's digest. Whoever receives a version computes the digest
//     again from what arrived, so a version cannot claim another's identity.
//   - Parent: the version this one was made from (the previous checkpoint of
//     the same machine, or the version a resumed copy started from); zero for
//     a first version. Lineage: the parent links a node knows, kept per set
//     in an append-only log, so that ancestry survives the pruning of the
//     versions themselves.
//   - Head: the set's current version. A commit moves the head when the head
//     is an ancestor of the new version (a fast-forward) or the set has none;
//     otherwise both copies ran since their common base, and the new version
//     is kept beside the head without becoming current (ErrDiverged) until
//     someone chooses (Force).
//   - Runner: the node that runs the set's machine now. A hand-off moves it;
//     starting a copy of a set another node runs is refused unless forced.
//
// # Layout
//
//	DIR/packs/                      the chunk store (chunk.PackStore)
//	DIR/sets/SET/versions/NNNNNN/   version.json, one IMAGE.idx per image, meta
//	DIR/sets/SET/HEAD               the current version's number
//	DIR/sets/SET/lineage            digest and parent digest, one pair a line
//	DIR/sets/SET/runner.json        which node runs the set
//	DIR/tmp/                        versions being assembled
//	DIR/lock                        held by one writing operation at a time
//
// A version directory is assembled in DIR/tmp and renamed into place after
// its files are durable; HEAD is replaced atomically after that. A crash
// leaves the previous head intact. Files are private (0600, directories
// 0700): they describe a guest's disks and memory.
//
// # One repository, three views
//
// A node has one repository directory. This package owns it: opening it
// (Open creates DIR/sets and DIR/tmp, private, and clears what a dead
// process left in DIR/tmp; OpenExisting says ErrNotRepo when DIR is not a
// repository), its versions, heads, lineage and chunk store, reading its
// files (bounded, never through a link), and removing versions (Remove,
// and Thin for every keep rule). Two packages look at it each for their
// own work, and add only that:
//
//	type                what it adds                                   who uses it
//	repo.Repo           versions, head, lineage, runner, chunk         the two views; the sender's
//	                    store, Thin, Collect                           StateDir; ntc forget, check
//	capture.Repository  one set as checkpoints: manifests (a           checkpoints and their pruning;
//	                    version's metadata), overlay chains and        replicate; bench
//	                    their change records, the set's capture lock
//	sync.Repo           a receiver's view: per-set push locks,         ntc serve, ls, status, check,
//	                    images materialised as files, versions kept    pull, upload, resume, demo
//	                    elsewhere (an S3 bucket) through
//	                    sync.Versions, the older receiver layout
//	                    converted on open
//
// Both views open the repository through Open or OpenExisting and keep
// their extra files under DIR/sets/SET (capture/, images/).
//
// # What it does not do
//
// It does not move versions between nodes (package sync does), capture them
// (capture) or materialise their images as files.
package repo
