package main

import (
	"errors"
	"strings"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/qemu"
	"github.com/ntc-project/ntc/replicate"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/resume"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// hints say what to do next about the libraries' errors in ntc's own
// terms (commands, flags, configuration keys), which the libraries do not
// know.
var hints = []struct {
	err  error
	hint string
}{
	{qemu.ErrNoSocket, "give the running QEMU's QMP socket with --qmp SOCKET"},
	{repo.ErrNotRepo, "is it a directory 'ntc checkpoint --out' or 'ntc serve --store' wrote?"},
	{capture.ErrOldRepository, "take a new checkpoint into another directory (ntc checkpoint --out NEWDIR), which starts a node repository"},
	{capture.ErrOldManifest, "take a new checkpoint with this ntc ('ntc checkpoint') and push it"},
	{capture.ErrOverlayDir, "give an overlay directory on the same host with --overlay-dir"},
	{capture.ErrLayerNotPlain, "rewrite the image as an uncompressed qcow2 (qemu-img convert -O qcow2) and run the guest on the copy before checkpointing it"},
	{capture.ErrGuestNotRunning, "checkpoint a running guest: start it or let it go on (virsh start or resume DOMAIN, or QMP's cont), then try again"},
	{capture.ErrBusy, "wait for the other checkpoint or migration to end, then try again"},
	{capture.ErrMigrating, "or cancel that migration (QMP's migrate_cancel, virsh domjobabort DOMAIN)"},
	{capture.ErrHeadUnreadable, "take checkpoints of this VM into another set (ntc checkpoint --name SET)"},
	{capture.ErrNoQemuImg, "install qemu-img (Debian: apt-get install qemu-utils)"},
	{capture.ErrRemoteLibvirt, "ntc reads the guest's disks itself, so it runs on the VM's host: --connect qemu:///system or qemu:///session"},
	{capture.ErrNoLibvirtd, "is libvirtd (or virtqemud) running on this host?"},
	{capture.ErrNoDomain, "'virsh -c URI list --all' lists the domains"},
	{capture.ErrNoQEMUProcess, "run ntc on the domain's host, as root or as libvirt's QEMU user"},
	{qemu.ErrNoAccess, "run ntc as QEMU's user or as root"},
	{chunk.ErrStoreBusy, "another ntc process (a serve, a checkpoint) is writing this repository: wait for it to end, or stop it"},
	{ntcsync.ErrOldSender, "upgrade ntc on the sending node: its pushes then send damaged chunks again"},
	{capture.ErrNotConverging, "try --method background-snapshot"},
	{capture.ErrNoBackgroundSnapshot, "switch off xbzrle, compress, multifd and postcopy; run QEMU as root or set the sysctl vm.unprivileged_userfaultfd=1; or checkpoint with --method precopy"},
	{chunk.ErrIndexVersion, "a newer ntc wrote it: upgrade ntc here"},
	{transport.ErrNoIdentity, "run 'ntc init' to create this node's identity"},
	{transport.ErrNoAnswer, "check that 'ntc serve' runs there and listens on that port, that it allows this node (ntc serve ... --allow ID; 'ntc id' here prints it), and that UDP gets through (a firewall)"},
	{transport.ErrPeerNotAllowed, "on the receiver, allow this node: ntc serve ... --allow ID ('ntc id' here prints it)"},
	{transport.ErrVersionMismatch, "upgrade ntc on both sides"},
	{ntcsync.ErrLimit, "the receiver's log (ntc serve) names the limit: split the push (fewer images), or raise the limit there"},
	{repo.ErrDiverged, "the other copy ran on apart from this one: stop it there and push this one with --force (ntc push --force, ntc sync --force) to make it current, or keep the other and take it back"},
	{ntcsync.ErrBusy, "try again when the other push of the set ends"},
	{ntcsync.ErrNoSpace, "free space on the receiver and push again"},
	{ntcsync.ErrBadChunks, "check the sender's disk and memory"},
	{ntcsync.ErrRemoteInternal, "the receiver's log (ntc serve) says why"},
	{replicate.ErrNoCheckpoint, "take one with 'ntc checkpoint --out DIR --name SET'"},
	{resume.ErrNoCheckpoint, "is it a checkpoint pushed with 'ntc push --checkpoint'?"},
	{resume.ErrNoQEMU, "install it, or name a QEMU with --qemu (resume.qemu in the configuration)"},
	{resume.ErrWorkDirTooLong, "give a shorter --workdir"},
	{resume.ErrNeedKernel, "give this machine's copy of the kernel with --kernel PATH (or resume.kernel in the configuration)"},
	{resume.ErrNeedInitrd, "give this machine's copy of the initrd with --initrd PATH (or resume.initrd in the configuration)"},
	{resume.ErrNeedFirmware, "give this machine's copy of the firmware with --bios PATH (or resume.bios in the configuration)"},
	{resume.ErrLoadTimeout, "if the guest is that large or this machine that busy, allow more time with --load-timeout (resume.load-timeout in the configuration)"},
}

// hint returns a "hint: ..." line for each hint err matches.
func hint(err error) string {
	var b strings.Builder
	for _, h := range hints {
		if errors.Is(err, h.err) {
			b.WriteString("hint: " + h.hint + "\n")
		}
	}
	return b.String()
}
