// Package qemu is ntc's one place for talking to QEMU: its QMP monitor,
// starting and reaping a QEMU process, and the identity of a running one.
// capture, resume, bench and the test guests use it; QEMU's option syntax
// is package qemu/opt.
//
// # Vocabulary
//
//   - Monitor: the QMP wire. It is go-qemu's qmp.Monitor (so go-qemu's
//     generated commands in qmp/raw run on it) plus passing a file with a
//     command (getfd). SocketMonitor is the one for a -qmp unix socket: a
//     reader that copies each line it reads, sorts replies from events and
//     keeps events for whoever reads them. It replaces go-qemu's
//     SocketMonitor, which hands out replies aliasing its bufio.Scanner's
//     buffer (the next line overwrites a reply being decoded: a data race,
//     TestMonitorRepliesOutliveLaterLines) and drops the connection on a
//     reply over 64 KiB.
//   - Session: one QMP connection with a timeout on every command (a
//     command without reply in time breaks the session, since a late reply
//     would be taken for the next command's) and an event log read all the
//     time, so a reply never waits behind an unread event, which waiters
//     scan from a mark (EventMark, WaitEvent). QEMU's error replies are
//     *CommandError; a lost connection is ErrDisconnected.
//   - Backlog: what QEMU says as it comes (a Session's events, a guest's
//     console lines), kept for waiters that scan it from a mark, so that
//     nothing that came before the waiter looked is missed.
//   - Child: a QEMU (or resume's keeper) this process started and reaps
//     (StartChild). It dies with this process: SIGKILL as parent-death
//     signal, from a thread locked until the child is reaped, since the
//     signal follows the thread that forked, not the process.
//   - Process: the QEMU behind a socket, named by PID, start time and boot
//     ID, so a restarted QEMU with the same PID is another. QEMU serves one
//     QMP client at a time and one serving another stays silent: Dial asks
//     the kernel which process listens (SO_PEERCRED) and tells ErrQMPBusy
//     (a QEMU) from ErrNotQMP (anything else).
//
// # What it does not do
//
// It does not know what the commands mean (checkpoints are capture's,
// resuming is resume's), build QEMU's command line (resume and the test
// guests do), speak QMP over TCP, or use QMP's out-of-band execution. A Session holds the newest 4096 events; older ones are
// dropped. Package qemu/qmptest serves a fake QMP socket for tests.
package qemu
