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
//     with a fresh checkpoint, and pruning keeps the repository bounded.
//     After MaxCheckpointFailures checkpoints in a row have failed, Run
//     gives up. An error marked Permanent (the receiver refuses this node,
//     the guest is gone) ends Run at once: waiting will not heal it.
//
// The loop (Run) depends only on three small interfaces, Checkpointer,
// Pusher and Pruner, and on a Clock; Capture implements Checkpointer and
// Pruner over package capture, Push implements Pusher over package sync.
// OpenVersion turns a checkpoint of a capture repository into the images of
// a sync.Version, for Push and for 'ntc push --checkpoint'; AckedCheckpoint
// finds the checkpoint a receiver last committed, so that a restarted
// replication goes on from it.
//
// # What it does not do
//
// It does not prune the receiver's versions (the receiver does, with
// sync.Receiver.Keep), and it does not dial: Push is given the sync.Sender
// (connections, tuning, logger) its caller built. It prints nothing: each
// round goes to Config.Report, what the sender does to Push.Sender.Logger.
// Pruning (Capture.Prune) removes old checkpoints and then drops the chunks
// only they used from the capture repository's store.
package replicate
