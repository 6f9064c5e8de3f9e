// Package s3store keeps chunks in an S3-compatible object store (AWS S3,
// Ceph RGW, SeaweedFS, Garage, MinIO, versitygw...), so that a repository
// can outgrow one receiver's disk and several receivers can share one
// bucket without a lock service.
//
// Vocabulary:
//
//   - A store is a bucket and a key prefix, named s3://BUCKET/PREFIX. Under
//     the prefix: packs/<name> (pack objects), index/<name> (their
//     listings), refs/<name> (refs), blobs/<name> (blobs), gc/ (the state
//     of garbage collection).
//   - A pack is one object holding many chunks as records, in the same
//     format as a local chunk.PackStore's pack file. Chunks are collected
//     in memory until a pack reaches Config.PackSize (16 MiB by default),
//     then uploaded: one PUT per pack instead of one per chunk, since
//     requests are what object stores bill and throttle. Its name is the
//     BLAKE3-256 of its bytes.
//   - A listing says which chunks a pack holds and where (like a local
//     pack's sidecar). It is written after its pack, and a pack counts as
//     stored only once its listing exists: a writer killed mid-upload
//     leaves nothing (an S3 PUT is all or nothing) or a pack no listing
//     names, which readers never see. Both are created with
//     If-None-Match: *, so nothing is ever overwritten. Opening a store
//     lists index/ and reads each listing once (a damaged listing is
//     rebuilt from its pack).
//   - A read fetches one chunk with a ranged GET of its pack and verifies
//     it against its ID: damaged content is an *chunk.InvalidChunkError,
//     never returned. With Config.CacheDir, chunks read are kept in a local
//     chunk.PackStore and listings in files, so nothing is downloaded
//     twice (also across restarts). A reader that knows what it will
//     need reads many chunks with few GETs: Prefetch into the cache, or
//     Fetch, which hands them to the caller (a pull that keeps them in a
//     node's own store).
//   - A ref is a small object replaced only by compare-and-swap: created
//     with If-None-Match: *, replaced with If-Match: the ETag it had when
//     read. Of two writers racing from the same state one wins and the
//     other gets ErrConflict. Refs.Update is the read-modify-write loop
//     (what a version pointer of a set would use).
//   - A blob is an object created once and never replaced (a version's
//     record or index, written before a ref names it).
//   - Garbage collection (gc.go) is the store's half of a mark-and-sweep
//     that runs while others write: Condemn, the caller's barrier, Sweep;
//     and Ensure, which a commit calls between reading and swapping its
//     ref. The repository decides what is live (repo/s3versions does).
//
// Several Stores, in one process or on many machines, may write one
// bucket and prefix at once: every object is created at most once, pack
// names are content hashes, and a Store learns of other writers' packs at
// Open and Refresh. Two writers may store the same chunk in different
// packs before either sees the other's; that costs space, not
// correctness. A writer whose pack has the same bytes (the same name) as
// one already in the bucket does not adopt that object, which may be one
// a collection is deleting: it adds a salt record and stores its own.
//
// Credentials, region and endpoint come the standard AWS way (see
// Config), through aws-sdk-go-v2.
//
// The package does not decide what to keep (the repository marks what is
// live), keeps no version records of its own (repo/s3versions does, in
// refs and blobs), and does not evict from the cache. README.md sizes a fleet on it.
package s3store
