// Package bench measures ntc against what people use today (rsync, a full
// copy) and against the physical limits, on loopback and over emulated WAN
// links (bench/link). Every number is reported beside a baseline measured
// in the same run, as a ratio: the machines are noisy.
//
// The scenarios drive the real ntc binary as two processes, as a user
// would, and the real rsync.
package bench
