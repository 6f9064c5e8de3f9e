// Package bench measures ntc against what people use today (rsync, a full
// copy, QEMU's own live migration) and against the physical limits, on
// loopback and over emulated WAN links (bench/link). Every number is
// reported beside a baseline measured in the same run, as a ratio: the
// machines are noisy.
//
// Vocabulary:
//
//   - Scenario: an old and a new version of some data: an image file
//     (random writes, a Debian package install: bench/debimg), or, for the
//     VM scenarios, two checkpoints of the test guest a stretch of work
//     apart (PrepareVM), kept in a capture repository and also written as
//     files (the migration stream and the raw disk of each).
//   - Tool: a way to bring the receiver from the old version to the new:
//     ntc push, rsync with and without -z, a full zstd copy, and for VM
//     scenarios QEMU's live migration of the running guest.
//   - Case: one tool on one scenario over one link: bytes on the wire, time,
//     CPU and memory of both sides, and the physical limit (the
//     zstd-compressed 4 KiB blocks that changed, at the link rate, plus two
//     round trips).
//
// The scenarios drive the real ntc binary as two processes, as a user
// would, and the real rsync and QEMU. It does not judge: the report states
// ratios, and the bars live in the issues.
package bench
