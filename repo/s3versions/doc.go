// Package s3versions keeps the versions of sets in an S3 bucket, beside the
// chunks of an s3store.Store, so that several receivers sharing one bucket
// commit versions without a lock service and never lose or half-show one.
//
// Vocabulary:
//
//   - A set's head is one small object, refs/sets/SET/head, listing the
//     set's committed versions (number, digest, parent digest, where its
//     objects are) and which one is current. It is only ever created with
//     If-None-Match: * or replaced with If-Match: the ETag it was read with.
//   - A version's objects (its record, one encoded chunk.Index per image,
//     its metadata) are blobs under blobs/sets/SET/v/DIGEST.NONCE/, created
//     once, before the head names them. The nonce makes every attempt's
//     objects its own, so an attempt that lost never shares objects with
//     the one that won.
//   - A commit reads the head (Head), decides (fast-forward or not: the
//     repository's business), and calls Commit with the head it read:
//     Commit makes sure the chunks the version uses are stored and out of
//     reach of a collection under way (s3store.Store.Ensure), writes the
//     version's objects, then swaps the head. That swap is the commit: a
//     version is visible whole or not at all. Of two receivers committing
//     the same set from the same head one wins and the other gets
//     s3store.ErrConflict: it reads the head again and decides again.
//   - Collect removes what no head lists: packs whose chunks no listed
//     version uses (by the rule in chunk/s3store/gc.go, which the heads'
//     barrier completes) and the objects of versions no head lists.
//
// The package does not decide which versions to keep or which is current
// (the repository does, with Commit, SetCurrent and Remove), does not
// compute version digests (it stores the bytes it is given).
package s3versions
