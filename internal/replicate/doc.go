// Package replicate keeps a receiver's copy of a running QEMU guest a few
// seconds behind it: a loop takes a live checkpoint (package capture),
// pushes it as the receiver's next version (package sync), prunes old
// checkpoints, and waits for the next interval.
//
// # Vocabulary
//
//   - Round: one checkpoint and its push. Rounds start Every apart,
//     measured from one checkpoint's start to the next; a round that takes
//     longer than Every is followed at once, so the copy lags by at most
//     about one round's time.
//   - Lag: how far behind the receiver's copy is once a round commits: from
//     the checkpoint's instant (QEMU's STOP event) to the receiver's commit
//     (the push returning).
//   - Acked: the checkpoint the receiver last committed. Pushes describe
//     disk writes as patches against it, so pruning never removes it.
//   - Transient and permanent failures: a push that fails because the
//     link or the receiver is down, or a checkpoint that fails for a reason
//     QEMU may get over, is retried in a later round; rounds then start
//     further apart (Every, doubled per failed round, up to MaxBackoff), each
//     with a fresh checkpoint, and pruning keeps the repository bounded. An
//     error marked Permanent (the receiver refuses this node, the guest is
//     gone) ends Run: waiting will not heal it.
//
// The loop (Run) depends only on three small interfaces, Checkpointer,
// Pusher and Pruner, and on a Clock; Capture and Push implement the first
// three over packages capture and sync. OpenVersion turns a checkpoint of a
// capture repository into a sync.Version, for Push and for
// 'ntc push --checkpoint'.
//
// # What it does not do
//
// It does not prune the receiver's versions (the receiver does, with
// sync.Receiver.Keep). It prints nothing: each round goes to
// Config.Report. Pruning (Capture.Prune) removes old checkpoints and then
// drops the chunks only they used from the capture repository's store.
package replicate
