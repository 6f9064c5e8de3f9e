package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ntc-project/ntc/qemu"
)

// runState is the reply of query-status.
type runState struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

func queryStatus(ctx context.Context, s *qemu.Session) (runState, error) {
	var st runState
	err := s.Run(ctx, "query-status", nil, &st)
	return st, err
}

// notRunningError explains why ntc refuses a guest in state st.
func notRunningError(st runState) error {
	var what string
	switch st.Status {
	case "paused":
		what = "the guest is paused; ntc leaves it paused and checkpoints running guests only " +
			"(QEMU's background snapshot would resume it)"
	case "shutdown", "guest-panicked", "internal-error", "io-error":
		what = fmt.Sprintf("the guest has stopped (%s): there is nothing live to checkpoint", st.Status)
	case "inmigrate", "prelaunch":
		what = fmt.Sprintf("the guest has not started yet (%s)", st.Status)
	case "postmigrate", "finish-migrate":
		what = fmt.Sprintf("the guest was migrated away (%s)", st.Status)
	default:
		what = fmt.Sprintf("the guest is %s, not running", st.Status)
	}
	return fmt.Errorf("%s: %w", what, ErrGuestNotRunning)
}

// migrationActive reports whether a migration status means one is under way.
func migrationActive(status string) bool {
	switch status {
	case "", "none", "completed", "failed", "cancelled":
		return false
	}
	return true
}

type migrateInfo struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

func queryMigrate(ctx context.Context, s *qemu.Session) (migrateInfo, error) {
	var mi migrateInfo
	err := s.Run(ctx, "query-migrate", nil, &mi)
	return mi, err
}

// describeMachine collects the machine description from the source's
// command line or libvirt domain XML (describeSource) and QEMU's
// answers, which win where both say something: the versioned machine
// type, the RAM size, the CPU count, the target.
func describeMachine(ctx context.Context, s *qemu.Session) (Machine, error) {
	m, err := describeSource(s)
	if err != nil {
		return m, err
	}
	var target struct {
		Arch string `json:"arch"`
	}
	if err := s.Run(ctx, "query-target", nil, &target); err == nil && target.Arch != "" {
		m.Arch = target.Arch
	}
	var typ string
	if err := s.Run(ctx, "qom-get", map[string]any{"path": "/machine", "property": "type"}, &typ); err != nil {
		return m, fmt.Errorf("read the machine type: %w", err)
	}
	m.Type = strings.TrimSuffix(typ, "-machine")
	var mem struct {
		Base    int64 `json:"base-memory"`
		Plugged int64 `json:"plugged-memory"`
	}
	if err := s.Run(ctx, "query-memory-size-summary", nil, &mem); err != nil {
		return m, fmt.Errorf("read the RAM size: %w", err)
	}
	m.RAM.Size = mem.Base + mem.Plugged
	var cpus []json.RawMessage
	if err := s.Run(ctx, "query-cpus-fast", nil, &cpus); err != nil {
		return m, fmt.Errorf("count the CPUs: %w", err)
	}
	m.CPU.Count = len(cpus)
	return m, nil
}

// chainLayer is one layer of a disk's live chain.
type chainLayer struct {
	File   string
	Format string
}

// liveDisk is a writable disk as QEMU reports it.
type liveDisk struct {
	Name   string // "disk-" + Device, made a file name
	Device string // qdev id, else drive name, else node name
	Node   string // the top node (the device's active layer)
	Size   int64
	Chain  []chainLayer // top first
}

type imageTree struct {
	Filename    string     `json:"filename"`
	Format      string     `json:"format"`
	VirtualSize int64      `json:"virtual-size"`
	Backing     *imageTree `json:"backing-image"`
}

type blockInfo struct {
	Device   string `json:"device"`
	QDev     string `json:"qdev"`
	Inserted *struct {
		NodeName  string    `json:"node-name"`
		ReadOnly  bool      `json:"ro"`
		Encrypted bool      `json:"encrypted"`
		Image     imageTree `json:"image"`
	} `json:"inserted"`
}

// queryDisks lists the writable disks and their chains. Read-only media
// (CD-ROMs) do not change and get no overlay; they are left out.
func queryDisks(ctx context.Context, s *qemu.Session) ([]liveDisk, error) {
	var infos []blockInfo
	if err := s.Run(ctx, "query-block", nil, &infos); err != nil {
		return nil, fmt.Errorf("list the disks: %w", err)
	}
	used := map[string]bool{}
	var out []liveDisk
	for _, bi := range infos {
		in := bi.Inserted
		if in == nil || in.ReadOnly {
			continue
		}
		d := liveDisk{Node: in.NodeName, Size: in.Image.VirtualSize, Device: deviceName(bi.QDev, bi.Device, in.NodeName)}
		if d.Node == "" {
			return nil, fmt.Errorf("disk %s has no node name: %w", d.Device, ErrUnsupported)
		}
		if in.Encrypted {
			return nil, fmt.Errorf("disk %s is encrypted: %w", d.Device, ErrUnsupported)
		}
		for t := &in.Image; t != nil; t = t.Backing {
			file, err := layerFile(ctx, s, t.Filename)
			if err != nil {
				return nil, fmt.Errorf("disk %s: %w", d.Device, err)
			}
			d.Chain = append(d.Chain, chainLayer{File: file, Format: t.Format})
		}
		d.Name = imageName(used, "disk-", d.Device)
		out = append(out, d)
	}
	return out, nil
}

// deviceName picks the most stable name of a block device: the qdev id
// ("vda" from /machine/peripheral/vda/virtio-backend), else the drive
// name, else the node name.
func deviceName(qdev, drive, node string) string {
	if rest, ok := strings.CutPrefix(qdev, "/machine/peripheral/"); ok {
		if id, _, _ := strings.Cut(rest, "/"); id != "" {
			return id
		}
	}
	if drive != "" {
		return drive
	}
	if qdev != "" && !strings.HasPrefix(qdev, "/") {
		return qdev
	}
	return node
}

// migrationSetup is what a checkpoint changes in QEMU's migration setup,
// to be put back afterwards.
type migrationSetup struct {
	caps   map[string]bool
	params migrationParams
}

type migrationParams struct {
	MaxBandwidth  int64 `json:"max-bandwidth"`
	DowntimeLimit int64 `json:"downtime-limit"`
}

// checkpointBandwidth is max-bandwidth during a checkpoint (bytes/s): as
// fast as ntc reads. QEMU's default, 128 MiB/s, would stretch the snapshot.
const checkpointBandwidth = 1 << 40

// Migration capabilities a checkpoint sets.
var checkpointCaps = []string{"background-snapshot", "pause-before-switchover", "events"}

func setupMigration(ctx context.Context, s *qemu.Session, method Method, downtime time.Duration) (*migrationSetup, error) {
	var caps []struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	if err := s.Run(ctx, "query-migrate-capabilities", nil, &caps); err != nil {
		return nil, err
	}
	saved := &migrationSetup{caps: map[string]bool{}}
	for _, c := range caps {
		saved.caps[c.Capability] = c.State
	}
	for _, c := range checkpointCaps {
		if _, ok := saved.caps[c]; !ok {
			return nil, fmt.Errorf("QEMU %s has no %s migration capability (QEMU 6.0 or later has): %w", s.Version(), c, ErrUnsupported)
		}
	}
	if err := s.Run(ctx, "query-migrate-parameters", nil, &saved.params); err != nil {
		return nil, err
	}
	bg := method == MethodBackground
	set := []map[string]any{
		{"capability": "background-snapshot", "state": bg},
		{"capability": "pause-before-switchover", "state": !bg},
		{"capability": "events", "state": true},
	}
	if err := s.Run(ctx, "migrate-set-capabilities", map[string]any{"capabilities": set}, nil); err != nil {
		var ce *qemu.CommandError
		if errors.As(err, &ce) && bg {
			return nil, fmt.Errorf("enable QEMU's background snapshot: %w: %w (it needs userfaultfd write-protect, "+
				"which an unprivileged QEMU has only with vm.unprivileged_userfaultfd=1, and none of xbzrle, compress, "+
				"multifd or postcopy): %w", err, ErrNoBackgroundSnapshot, ErrUnsupported)
		}
		return nil, fmt.Errorf("set up QEMU's migration for a checkpoint: %w", err)
	}
	params := map[string]any{"max-bandwidth": checkpointBandwidth}
	if !bg {
		params["downtime-limit"] = max(downtime.Milliseconds(), 1)
	}
	if err := s.Run(ctx, "migrate-set-parameters", params, nil); err != nil {
		return saved, err
	}
	return saved, nil
}

// chooseMethod is MethodAuto's choice: MethodBackground when precopy can
// lose guest writes (see precopyLosesWrites) or when every writable RAM
// block of 1 MiB or more is on pages larger than 4 KiB (huge pages),
// MethodPrecopy otherwise, or when QEMU does not say (x-query-ramblock,
// QEMU 6.2 and later).
//
// QEMU 7.2's background snapshot, inside the guest pause, reads a byte of
// every page of guest RAM (ram_write_tracking_prepare) and then
// write-protects every page (userfaultfd): on 4 KiB pages 65,536 pages per
// 256 MiB, which costs hundreds of milliseconds on a virtualized host (see
// the package documentation).
func chooseMethod(ctx context.Context, s *qemu.Session) Method {
	if precopyLosesWrites(ctx, s) {
		return MethodBackground
	}
	var out struct {
		Text string `json:"human-readable-text"`
	}
	if err := s.Run(ctx, "x-query-ramblock", nil, &out); err != nil {
		return MethodPrecopy
	}
	huge, ok := ramOnHugePages(out.Text)
	if !ok || !huge {
		return MethodPrecopy
	}
	return MethodBackground
}

// ramOnHugePages reads x-query-ramblock's table (block name, page size,
// offset, used, total; QEMU 8.0 adds host address and ro/rw) and says
// whether every block of 1 MiB or more that is not read-only has pages
// larger than 4 KiB; ok is false when the table says nothing usable.
func ramOnHugePages(table string) (huge, ok bool) {
	huge = true
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "Block" {
			continue
		}
		i := slices.IndexFunc(f, func(s string) bool { return strings.HasPrefix(s, "0x") })
		if i < 2 || len(f) < i+3 {
			return false, false
		}
		used, err := strconv.ParseUint(strings.TrimPrefix(f[i+1], "0x"), 16, 64)
		if err != nil {
			return false, false
		}
		if used < 1<<20 || (len(f) > i+4 && f[i+4] == "ro") {
			continue
		}
		ok = true
		if psize := strings.Join(f[1:i], " "); psize == "4 KiB" {
			huge = false
		}
	}
	return huge && ok, ok
}

// restore puts the migration setup back as it was.
func (m *migrationSetup) restore(ctx context.Context, s *qemu.Session) error {
	var set []map[string]any
	for _, c := range checkpointCaps {
		set = append(set, map[string]any{"capability": c, "state": m.caps[c]})
	}
	err1 := s.Run(ctx, "migrate-set-capabilities", map[string]any{"capabilities": set}, nil)
	err2 := s.Run(ctx, "migrate-set-parameters", m.params, nil)
	return errors.Join(err1, err2)
}

// prepareOverlay creates the overlay file for a layer of format and size
// bytes at backing (the active layer it will cover) and opens it in QEMU
// as a node without backing, so that the snapshot itself, in the pause,
// only changes the graph (blockdev-snapshot) instead of creating a file.
func prepareOverlay(ctx context.Context, s *qemu.Session, ov layer, backing chainLayer, size int64) error {
	if _, err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-u", "-b", backing.File, "-F", backing.Format,
		ov.File, strconv.FormatInt(size, 10)); err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	// The guest's writes land here: private, or as private as the disk
	// (qemu-img creates files 0644; the overlay is still empty).
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(backing.File); err == nil {
		mode = fi.Mode().Perm() & mode
	}
	if err := os.Chmod(ov.File, mode); err != nil {
		os.Remove(ov.File)
		return fmt.Errorf("create overlay: %w", err)
	}
	err := s.Run(ctx, "blockdev-add", map[string]any{
		"driver": "qcow2", "node-name": ov.Node, "backing": nil,
		"file": map[string]any{"driver": "file", "filename": ov.File},
	}, nil)
	if err != nil {
		os.Remove(ov.File)
		return fmt.Errorf("open overlay %s in QEMU: %w", ov.File, err)
	}
	return nil
}

// dropOverlay undoes prepareOverlay for an overlay that never joined the
// chain.
func dropOverlay(ctx context.Context, s *qemu.Session, ov layer) {
	if s.Err() == nil {
		s.Run(ctx, "blockdev-del", map[string]any{"node-name": ov.Node}, nil)
	}
	os.Remove(ov.File)
}

// snapshotAction makes the prepared overlay node the active layer above
// node, in a transaction.
func snapshotAction(node, overlay string) map[string]any {
	return map[string]any{
		"type": "blockdev-snapshot",
		"data": map[string]any{"node": node, "overlay": overlay},
	}
}

// commit merges the layers above base up to and including top into base,
// live, and waits for the job to end. top must not be the active layer.
func commit(ctx context.Context, s *qemu.Session, device, top, base, job string) error {
	return commitJob(ctx, s, device, top, base, job, false)
}

// commitJob runs block-commit job (top into base) and waits for it to
// end. For an active commit (top the active layer), it completes the job
// once QEMU says it is ready, which makes base the active layer again.
func commitJob(ctx context.Context, s *qemu.Session, device, top, base, job string, active bool) error {
	mark := s.EventMark()
	args := map[string]any{"job-id": job, "device": device, "top-node": top, "base-node": base}
	if err := s.Run(ctx, "block-commit", args, nil); err != nil {
		return err
	}
	ev, err := waitCommitJob(ctx, s, mark, job, active)
	if err != nil {
		return err
	}
	if ev.Name == "BLOCK_JOB_READY" {
		mark = s.EventMark()
		if err := s.Run(ctx, "block-job-complete", map[string]any{"device": job}, nil); err != nil {
			return fmt.Errorf("complete block-commit job %s: %w", job, err)
		}
		if ev, err = waitCommitJob(ctx, s, mark, job, false); err != nil {
			return err
		}
	}
	if ev.Name == "BLOCK_JOB_CANCELLED" {
		return fmt.Errorf("block-commit job %s was cancelled", job)
	}
	if msg := ev.String("error"); msg != "" {
		return fmt.Errorf("block-commit job %s: %s", job, msg)
	}
	return nil
}

// waitCommitJob waits from mark for job's end (BLOCK_JOB_COMPLETED or
// BLOCK_JOB_CANCELLED) or, with ready, for it to be ready.
func waitCommitJob(ctx context.Context, s *qemu.Session, mark int, job string, ready bool) (qemu.Event, error) {
	ev, _, err := s.WaitEvent(ctx, mark, func(e qemu.Event) bool {
		return (e.Name == "BLOCK_JOB_COMPLETED" || e.Name == "BLOCK_JOB_CANCELLED" || ready && e.Name == "BLOCK_JOB_READY") &&
			e.String("device") == job
	})
	if err != nil {
		return ev, fmt.Errorf("wait for block-commit job %s: %w", job, err)
	}
	return ev, nil
}

// waitMigrationIdle polls until no migration is under way, for at most d.
func waitMigrationIdle(ctx context.Context, s *qemu.Session, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		mi, err := queryMigrate(ctx, s)
		if err != nil {
			return err
		}
		if !migrationActive(mi.Status) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migration still %s after %s", mi.Status, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// precopyLosesWrites says whether a precopy migration of this QEMU can
// miss guest writes, so that the RAM it sends is not the guest's RAM at the
// instant: under TCG, QEMU before 9.0 clears the migration dirty bitmap a
// word at a time without re-arming the vCPUs' TLB dirty tracking, so stores
// through TLB entries filled earlier (kernel pages: their global mappings
// survive context switches) are never marked dirty and never resent. QEMU
// 9.0 fixed it (commit 03bfc2188f, "physmem: Fix migration dirty bitmap
// coherency with TCG memory access"). Seen on QEMU 7.2: pages of the busy
// test guest's kernel differed from its memory in the pause, and guests
// restored from such checkpoints panicked (list_del corruption, "Attempted
// to kill the idle task!"). A background snapshot tracks writes with
// userfaultfd instead, and KVM with its own dirty log.
func precopyLosesWrites(ctx context.Context, s *qemu.Session) bool {
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	if err := s.Run(ctx, "query-kvm", nil, &kvm); err != nil {
		kvm.Enabled = false // unknown: assume the worst
	}
	return tcgDirtyBug(s.VersionAtLeast(9, 0), kvm.Enabled)
}

// tcgDirtyBug is precopyLosesWrites' rule: TCG (KVM not enabled) on QEMU
// older than 9.0.
func tcgDirtyBug(atLeast90, kvm bool) bool { return !atLeast90 && !kvm }

// layerFile turns the file name QEMU reports for a layer into the path of
// the file: a layer whose backing was opened through a file descriptor
// (as package resume opens received images) is reported as a "json:"
// description, whose own file is named inside; a file opened through a
// descriptor as /dev/fdset/N, which is QEMU's descriptor's file
// (/proc/PID/fd). Other names are returned as they are.
func layerFile(ctx context.Context, s *qemu.Session, name string) (string, error) {
	if desc, ok := strings.CutPrefix(name, "json:"); ok {
		var spec struct {
			File struct {
				Driver   string `json:"driver"`
				Filename string `json:"filename"`
			} `json:"file"`
		}
		if err := json.Unmarshal([]byte(desc), &spec); err == nil && spec.File.Driver == "file" && spec.File.Filename != "" {
			name = spec.File.Filename
		}
	}
	id, ok := strings.CutPrefix(name, "/dev/fdset/")
	if !ok {
		return name, nil
	}
	var sets []struct {
		ID  int `json:"fdset-id"`
		FDs []struct {
			FD int `json:"fd"`
		} `json:"fds"`
	}
	if err := s.Run(ctx, "query-fdsets", nil, &sets); err != nil {
		return "", fmt.Errorf("find the file of %s: %w", name, err)
	}
	pid := s.Peer().PID
	for _, set := range sets {
		if strconv.Itoa(set.ID) != id || len(set.FDs) == 0 || pid == 0 {
			continue
		}
		path, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, set.FDs[0].FD))
		if err != nil {
			return "", fmt.Errorf("find the file of %s: %w", name, err)
		}
		return path, nil
	}
	return "", fmt.Errorf("find the file of %s: QEMU holds no such descriptor set: %w", name, ErrUnsupported)
}
