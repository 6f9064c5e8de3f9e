// Package sync moves versions of images from a sender to a receiver,
// sending only the chunks the receiver lacks, and commits each version
// atomically on the receiver.
//
// Vocabulary: a Version is a named Set's next state: several images (disks,
// RAM, device state, or plain files) plus opaque metadata, which travel and
// commit as one. An image is its chunk.Index and a Source of chunk content.
// Versions live in node repositories (package repo): each has a digest
// that is the same on every node and records its parent's digest and the
// node that made it. The receiver keeps them in a Repo: a repo.Repo in its
// directory, the chunk store, and each set's current version materialized
// as files (at each commit, or when a resume or restore asks for them:
// Repo.ImagesOnDemand, and always for a repository kept elsewhere). The sender keeps the versions it pushes in its own repo.Repo
// (Sender.StateDir), index-only: their chunks stay where its Sources read
// them.
//
// # Protocol (version 4)
//
// A push runs over QUIC connections (package transport: mutually pinned
// identities): a control connection, and on long paths a few data
// connections that carry only data streams and join the push by its
// session token. Frames are a type byte, a uvarint length and a payload;
// integers in payloads are uvarints unless noted.
//
// A push first records the version in the sender's repository: a child of
// the sender's head of the set, or the head itself when the images and
// metadata are the head's. The sender opens the control stream and says
// hello (magic, protocol version, set name; a receiver answers another
// protocol version than 2 to 4 with the version error (ErrVersionMismatch,
// which matches transport.ErrVersionMismatch); protocol 3 only adds groups of chunks, which a protocol 2
// sender never sends, and 4 heals, which a receiver asks of 4 only),
// then its candidates: a force flag and the digests of its versions of the
// set, newest first (at most 64). The receiver answers with its base: the
// newest candidate it holds (repo.Repo.Newest: its number there, digest
// and, per image, the BLAKE3 digest of its index; all zero when there is
// none) and its current version's digest. The sender reads the base's
// indexes from its own repository (if it lost them it asks for each,
// need-index / index). It then offers the version: a header (digest,
// parent digest, node, creation instant, the base's digest, the lineage
// links from the version back to the base, metadata, and per image its
// name, size, chunk parameters and whether it is based on the base image
// of the same name), ops frames, and an end frame. Ops edit the base
// image's entry list into the new one: keep n, skip n, insert entries
// (length, zero flag, ID). An unchanged image is one keep op, so a version
// costs bytes in proportion to what changed, not to the image size. A
// sender that knows what this receiver acknowledged last offers against
// it at once, before the base arrives; the receiver skips an offer against
// another base than its own, and the sender offers again.
//
// The receiver rebuilds the indexes and computes the version's digest from
// them and the header (repo.Version.Seal): an offer whose digest is not
// its content's is refused (ErrDigestMismatch) before any chunk is asked
// for.
//
// Both sides then list the distinct IDs of inserted data entries in order of
// first appearance. The receiver answers with a want bitmap over that list
// (the chunks its store lacks). The sender announces on the control stream
// how many data streams it opens for the round, and sends each wanted chunk
// once over them (ordinal, codec raw, zstd or patch, data), at most at the
// bandwidth cap. Each data stream chooses its zstd level from what it
// waits for (fastest while the CPU is the limit, up to the best level
// while the link is: level.go), and on a long path compresses the chunks
// of a batch together (a group: their ordinals and one zstd frame of at
// most 1 MiB of content; protocol 3). The receiver
// decompresses, verifies each chunk's BLAKE3
// against its ID, and stores the good ones; a damaged chunk is refused and
// asked for again in the next round (at most 3). When nothing is missing the
// receiver syncs its store and commits the version (repo.Repo.Commit, with
// the offer's lineage). When the set's current version is an ancestor of
// it (a fast-forward), or the set has none, or the sender forced it, it
// becomes current and the materialized image files are brought to it
// (unless images are materialized on demand).
// Otherwise both copies ran since their common base: the version is
// stored but not made current (a divergence is never silently
// overwritten), the receiver logs it, and the sender's Push returns an
// error matching repo.ErrDiverged that says to push with force. A version
// the receiver holds already changes nothing but may become current. The
// receiver answers committed (the version's number there, its current
// version's digest, whether it diverged); the sender records what the
// peer acknowledged.
//
// A chunk the receiver's store holds that fails verification while the
// push reads it (a patch's base, an image file being written) is set
// aside and, from a protocol 4 sender, asked for again within the push:
// heal frames name such chunks of the version, both sides append those
// not listed yet to the list of new chunks, and a round wants them
// (heal.go). A peer may also ask what the receiver holds, instead of
// pushing: a status frame, answered with the sets' current versions
// (status.go); a hand-off's resume request is the third such first frame.
//
// Errors travel as codes in an error frame (errors.go), never as text. A
// malformed frame also closes the connection with transport's protocol
// violation code; the receiver goes on serving other connections.
//
// # What a peer may cost the receiver
//
// Everything a peer sends is treated as hostile, allowed or not (Limits):
//
//   - Frames: each stream's frames are bounded by type (a control frame
//     16 MiB, a chunk frame twice the largest chunk the offer's parameters
//     allow), and a frame's buffer grows as its bytes arrive, never to the
//     length it announces.
//   - Offers: names pass CheckName and appear once, chunks are no larger
//     than MaxChunk, images per version are bounded; a push offers at
//     most twice and asks for each base index once. Ops are applied as
//     they arrive, without materializing them: a run of zero entries
//     becomes one entry (senders merge them too, so both sides hold the
//     same index), entries may not pass the image's end, and an image's
//     entries (MaxEntries) and an offer's ops bytes (MaxOpsBytes) are
//     bounded.
//   - Chunks: a zstd frame must declare the chunk's length (a group's,
//     its chunks' lengths together), decoding is bounded by the largest
//     chunk (a group: 64 chunks, 1 MiB), a patch has at most 4096 segments,
//     and each wanted chunk is taken once a round: a round decompresses
//     at most the bytes it asked for.
//   - Memory: what a push buffers (frames, decompressed chunks, the
//     entries of its images and of their bases, its list of new chunks)
//     is reserved first from a budget shared by all pushes (Memory) and
//     from its peer's share (PeerMemory); a push that cannot reserve what
//     it needs within half of Stall fails with ErrLimit.
//   - Time: every wait for the peer (its next frame, its reading what the
//     receiver writes, the data streams it announced) ends after Stall
//     without progress (ErrStalled), releasing the set's lock and the
//     garbage collector; a peer has at most PushesPerPeer pushes in
//     progress.
//
// Connections per peer, handshakes per address and the refusal of peers
// not allowed are transport's (transport.Limits).
//
// # Interruptions
//
// Chunks are stored one by one, each atomically; the version is committed
// only at the end. A push that dies at any point (either side killed) leaves
// the previous version current and intact, and the next push sends only the
// chunks the receiver does not yet hold.
//
// # Keeping versions
//
// With Receiver.Keep (a repo.Policy: the newest N, the newest of each of the
// last hours, days, weeks) set, the receiver removes the versions the
// policy does not keep after each commit (never the current one, those its
// image files are being moved between, nor the tip of a diverged copy),
// and, at a moment when no push is
// under way, drops from its store the chunks no remaining version refers
// to (chunk.PackStore.Compact). A push interrupted before its commit and
// resumed after such a collection sends again the chunks it had stored.
// The sender's repository keeps only its head of each set and the versions
// the receivers last acknowledged.
//
// # Repositories of older ntc
//
// A receiver's directory in the layout ntc used before node repositories
// (sets/SET/v000042/manifest.json and CURRENT) is converted when it is
// opened: its versions, oldest first, each the parent of the next (node:
// its sender; created: when it was received), keeping their numbers, and
// the head is the old CURRENT. Each step can be done again, so a
// conversion a crash cut short is finished at the next open. The sender's
// older index cache (StateDir/indexes) is no longer read.
//
// # Files
//
// A repository's directories are 0700 and its files 0600: they hold guest
// data. Its files are read only inside it (os.Root), never through a
// symbolic link, and refused over a size before they are read (an index
// file over what 1<<24 entries take, a version over 4 MiB, metadata over
// 1 MiB).
//
// The package does not cut images into chunks (chunk does; IndexFile only
// calls chunk's indexers, in full or around changed ranges), implement the
// QUIC handshake or identities (transport does; a push dials its extra
// data connections through Sender.Dial, which the caller gives), or print
// anything (it logs to the *slog.Logger it is given).
package sync
