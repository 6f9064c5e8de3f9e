// Package sync moves versions of images from a sender to a receiver,
// sending only the chunks the receiver lacks, and commits each version
// atomically on the receiver.
//
// Vocabulary: a Version is a named Set's next state: several images (disks,
// RAM, device state, or plain files) plus opaque metadata, which travel and
// commit as one. An image is its chunk.Index and a Source of chunk content.
// The receiver keeps versions in a Repo: a chunk store, the committed
// versions' indexes, and the current version materialized as files.
//
// # Protocol (version 1)
//
// A push runs over QUIC connections (package transport: mutually pinned
// identities): a control connection, and on long paths a few data
// connections that carry only data streams and join the push by its
// session token. Frames are a type byte, a uvarint length and a payload;
// integers in payloads are uvarints unless noted.
//
// The sender opens the control stream and says hello (magic, protocol
// version, set name). The receiver answers with its base: the set's current
// version number and, per image, the BLAKE3 digest of its index. The sender
// keeps the indexes of versions the receiver acknowledged, by digest; if it
// lacks one it asks for it (need-index / index). It then offers version
// base+1: a header (version, base, metadata, and per image its name, size,
// chunk parameters and whether it is based on the base image of the same
// name), ops frames, and an end frame. Ops edit the base image's entry list
// into the new one: keep n, skip n, insert entries (length, zero flag, ID).
// An unchanged image is one keep op, so a version costs bytes in proportion
// to what changed, not to the image size.
//
// Both sides then list the distinct IDs of inserted data entries in order of
// first appearance. The receiver answers with a want bitmap over that list
// (the chunks its store lacks). The sender announces on the control stream
// how many data streams it opens for the round, and sends each wanted chunk
// once over them (ordinal, codec raw or zstd, data), at most at the
// bandwidth cap. The receiver decompresses, verifies each chunk's BLAKE3
// against its ID, and stores the good ones; a damaged chunk is refused and
// asked for again in the next round (at most 3). When nothing is missing the
// receiver syncs its store, writes the version's indexes and metadata to a
// temporary directory, renames it into place and points CURRENT at it (the
// commit), brings the materialized image files to the new version, and
// answers committed. The sender then records the acknowledged version.
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
//   - Chunks: a zstd frame must declare the chunk's length, decoding is
//     bounded by the largest chunk, a patch has at most 4096 segments,
//     and each wanted chunk is taken once a round: a round decompresses
//     at most the bytes it asked for.
//   - Memory: what a push buffers (frames, decompressed chunks, the
//     entries of its images and of their bases, its list of new chunks)
//     is reserved first from a budget shared by all pushes (Memory) and
//     from its peer's share (PeerMemory); a push that cannot reserve what
//     it needs within Stall fails with ErrLimit.
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
// With Receiver.Keep set, the receiver removes a set's versions older than
// the newest Keep after each commit (never the current one, nor those its
// image files are being moved between), and, at a moment when no push is
// under way, drops from its store the chunks no remaining version refers
// to (chunk.PackStore.Compact). A push interrupted before its commit and
// resumed after such a collection sends again the chunks it had stored.
// The sender's cache of acknowledged indexes keeps only the versions the
// receivers last acknowledged.
//
// # Files
//
// A repository's directories are 0700 and its files 0600: they hold guest
// data. Its files are read only inside it (os.Root), never through a
// symbolic link, and refused over a size before they are read (an index
// file over what 1<<24 entries take, a manifest over 4 MiB, metadata over
// 1 MiB).
//
// The package does not index images (chunk does), open connections
// (transport does) or print anything.
package sync
