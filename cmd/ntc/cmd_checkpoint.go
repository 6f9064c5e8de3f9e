package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/repo"
)

// guestOptions name the running guest and the checkpoint repository: the
// flags checkpoint and replicate share, bound to checkpoint.* in the
// configuration.
type guestOptions struct {
	qmp        string
	domain     string
	connect    string
	out        string
	name       string
	overlayDir string
	method     string
}

func (o *guestOptions) addFlags(g *globals, cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("qmp", "", "QMP unix socket of the running QEMU")
	f.String("domain", "", "a libvirt domain instead of --qmp (its QMP through libvirt, its disks through libvirt's snapshots)")
	f.String("connect", "", "libvirt connection URI for --domain (default qemu:///system)")
	f.String("out", "", "this node's repository directory (created if needed; 'ntc serve --store' may receive into the same one)")
	f.String("name", "", "the set the checkpoints are versions of (default: the libvirt domain's name, or "+capture.DefaultSet+")")
	f.String("overlay-dir", "", "where new disk overlays go (default: next to each disk)")
	f.String("method", string(capture.MethodAuto), "how RAM is captured: auto, background-snapshot or precopy")
	for _, name := range []string{"qmp", "domain", "connect", "out", "name", "overlay-dir", "method"} {
		g.bind(cmd, "checkpoint."+name, name)
	}
}

// load reads the flags (or the configuration) once the command runs.
func (o *guestOptions) load(g *globals) {
	o.qmp = g.v.GetString("checkpoint.qmp")
	o.domain = g.v.GetString("checkpoint.domain")
	o.connect = g.v.GetString("checkpoint.connect")
	o.out = g.v.GetString("checkpoint.out")
	o.name = g.v.GetString("checkpoint.name")
	o.overlayDir = g.v.GetString("checkpoint.overlay-dir")
	o.method = g.v.GetString("checkpoint.method")
}

// guest names the guest for people: its QMP socket or its libvirt domain.
func (o *guestOptions) guest() string {
	if o.domain != "" {
		return "libvirt domain " + o.domain
	}
	return o.qmp
}

// config checks the options and returns capture's configuration, whose log
// shows warnings (an explicit precopy this QEMU can get wrong) always and
// the rest with -v.
func (o *guestOptions) config(g *globals) (capture.Config, error) {
	switch {
	case o.qmp == "" && o.domain == "":
		return capture.Config{}, usagef("--qmp SOCKET is required: the QMP socket of the running QEMU (started with -qmp unix:SOCKET,server=on,wait=off); or --domain NAME for a libvirt guest")
	case o.qmp != "" && o.domain != "":
		return capture.Config{}, usagef("--qmp and --domain name the guest twice: give one")
	case o.connect != "" && o.domain == "":
		return capture.Config{}, usagef("--connect goes with --domain NAME")
	}
	if o.out == "" {
		return capture.Config{}, usagef("--out DIR is required: this node's repository (created if needed)")
	}
	if isS3(o.out) {
		return capture.Config{}, usagef("--out %s: a guest's checkpoints go to a directory of this node (its overlays and bookkeeping live there); 'ntc checkpoint --out s3://…' uploads each one, or push to an 'ntc serve --store s3://…'", o.out)
	}
	set := cmp.Or(o.name, o.domain, capture.DefaultSet)
	if err := capture.CheckName(set); err != nil {
		return capture.Config{}, usagef("--name %q: %v", set, err)
	}
	method := capture.Method(o.method)
	if method != capture.MethodAuto && method != capture.MethodPrecopy && method != capture.MethodBackground {
		return capture.Config{}, usagef("--method %q: want %s, %s or %s", o.method, capture.MethodAuto, capture.MethodBackground, capture.MethodPrecopy)
	}
	cfg := capture.Config{QMP: o.qmp, Domain: o.domain, Connect: o.connect, Dir: o.out, Set: set, Node: g.nodeName(),
		OverlayDir: o.overlayDir, Method: method}
	var err error
	if cfg.Logger, err = g.logger("capture"); err != nil {
		return capture.Config{}, err
	}
	return cfg, nil
}

type checkpointOptions struct {
	guestOptions
	downtime time.Duration
	noCommit bool
	workers  int
	release  bool
}

func newCheckpointCommand(g *globals) *cobra.Command {
	var o checkpointOptions
	cmd := &cobra.Command{
		Use:   "checkpoint --qmp SOCKET --out DIR [--name SET]",
		Short: "Take a live checkpoint of a running QEMU guest",
		Long: `Checkpoint captures a running QEMU guest, disk and memory consistent to one
instant, with the guest paused for milliseconds, as the next version of set
SET in this node's repository DIR (created if needed; the same directory
'ntc serve --store' receives into, so that what this node captured and what
it received share one chunk store and one history): DIR/packs holds the
chunks, DIR/sets/SET/versions/NNNNNN one index per disk, RAM block, the
device state and the stream description, with the checkpoint's manifest as
the version's metadata, committed once its chunks are durable. Each version
records its parent (the set's current version) and this node, so that a
push later finds the newest version both sides hold. With --out
s3://BUCKET/PREFIX the checkpoint goes into this node's repository (the
configuration's repo key, or $NTC_HOME/repo) and its version is then uploaded
to the bucket as 'ntc upload' does: only the chunks the bucket lacks
(--s3-endpoint or s3.endpoint for a store other than AWS).

QEMU must offer a QMP socket ntc can use (-qmp unix:SOCKET,server=on,wait=off;
QEMU serves one QMP client at a time, so give ntc its own socket if something
else holds one). The first checkpoint reads the disks in full; later ones read
only what the guest wrote since the previous checkpoint: every disk gets a new
qcow2 overlay at the checkpoint instant (created next to the disk, or in
--overlay-dir), and the overlay of the previous checkpoint, which holds
exactly those writes, is merged back into the disk image afterwards. The
guest keeps running on the newest overlay: restart it from its command line
only after 'ntc checkpoint --release' has merged the last overlay back (ntc
replicate does it when stopped), or point it at the overlay.

RAM is captured by a migration into ntc, kept as 4 KiB pages keyed by
content: only pages the repository lacks are stored. --method
background-snapshot pauses the guest only while QEMU saves the devices and
write-protects RAM, then sends RAM as it was while the guest runs; --method
precopy sends RAM while the guest runs and pauses it for the last pages.
QEMU 7.2 touches and write-protects every page of guest RAM inside a
background snapshot's pause: quick on huge pages, slow on 4 KiB pages. The
default, --method auto, takes a background snapshot when guest RAM is on huge
pages and precopy otherwise; under TCG on QEMU before 9.0, whose precopy
misses some guest writes (the checkpoint may not restore), always a background
snapshot. To give a guest huge pages (as root, reserve
them first: echo 2048 > /proc/sys/vm/nr_hugepages for 4 GiB):
  -object memory-backend-memfd,id=pc.ram,size=4G,share=on,prealloc=on,hugetlb=on,x-use-canonical-path-for-ramblock-id=off
  -machine memory-backend=pc.ram

On any error the guest is left running, its disks valid, and no checkpoint
looks complete that is not; earlier checkpoints are untouched. A paused guest
is refused and left paused.

Examples:
  ntc checkpoint --qmp /run/vm/qmp.sock --out /srv/ntc --name web
  ntc checkpoint --qmp /run/vm/qmp.sock --out /srv/ntc --name web --json
  ntc checkpoint --domain web --out /srv/ntc                  set "web", through libvirt
  ntc checkpoint --qmp vm.sock --out s3://vms/office --name web   into $NTC_HOME/repo, then the bucket
  ntc checkpoint --qmp vm.sock --out /srv/ntc --overlay-dir /var/lib/vm/overlays -v
  NTC_CHECKPOINT_OUT=/srv/ntc ntc checkpoint --qmp vm.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.load(g)
			return runCheckpoint(cmd.Context(), g, o)
		},
	}
	o.addFlags(g, cmd)
	addS3EndpointFlag(g, cmd)
	f := cmd.Flags()
	f.DurationVar(&o.downtime, "downtime", 20*time.Millisecond, "final pause the precopy method aims at")
	f.BoolVar(&o.noCommit, "no-commit", false, "keep earlier overlays instead of merging them into the disk")
	f.IntVar(&o.workers, "workers", 0, "goroutines hashing and storing (default: all cores)")
	f.BoolVar(&o.release, "release", false, "take no checkpoint: merge ntc's overlays back into the guest's own disk images, live (the VM as it was found)")
	return cmd
}

// checkpointJSON is checkpoint's --json summary.
type checkpointJSON struct {
	Seq    int         `json:"seq"`
	Parent int         `json:"parent"`
	Set    string      `json:"set"`
	Repo   string      `json:"repo"`
	Digest repo.Digest `json:"digest"`
	capture.Stats
	Method string `json:"method"`
	// Uploaded is the version's upload, for --out s3://BUCKET/PREFIX.
	Uploaded *copiedJSON `json:"uploaded,omitempty"`
}

func runCheckpoint(ctx context.Context, g *globals, o checkpointOptions) error {
	// A checkpoint "into a bucket" is taken into the node repository (the
	// guest's overlays and the set's bookkeeping live there), then its
	// version uploaded: only the chunks the bucket lacks.
	bucket := ""
	if isS3(o.out) {
		if o.release {
			return usagef("--release takes no checkpoint: it needs no --out")
		}
		bucket, o.out = o.out, g.repoDir()
	}
	cfg, err := o.config(g)
	if err != nil {
		return err
	}
	cfg.Downtime, cfg.NoCommit, cfg.Workers = o.downtime, o.noCommit, o.workers
	if o.release {
		rel, err := capture.Release(ctx, cfg)
		if err != nil {
			return err
		}
		if g.json {
			return writeJSON(g.stdout, rel)
		}
		if len(rel.Disks) == 0 {
			fmt.Fprintf(g.stdout, "%s: no overlay of ntc to merge (the guest writes to its own disks)\n", o.guest())
			return nil
		}
		fmt.Fprintf(g.stdout, "%s: merged %d overlay(s) back into %v: the guest writes to its own disk images again\n", o.guest(), rel.Overlays, rel.Disks)
		return nil
	}
	res, err := capture.Checkpoint(ctx, cfg)
	if err != nil {
		return err
	}
	m := res.Manifest
	out := checkpointJSON{
		Seq: m.Seq, Parent: m.Parent, Set: cfg.Set, Repo: cfg.Dir, Digest: res.Version.Digest,
		Stats: res.Stats, Method: string(m.Method),
	}
	var upErr error
	if bucket != "" {
		t0 := time.Now()
		co := copyOptions{url: bucket, version: uint64(m.Seq), endpoint: g.v.GetString("s3.endpoint")}
		stats, err := upload(ctx, cfg.Dir, cfg.Set, co)
		if err != nil && !errors.Is(err, repo.ErrDiverged) {
			return fmt.Errorf("checkpoint %d of %s is in %s, but its upload to %s failed (run 'ntc upload %s --to %s' to retry): %w",
				m.Seq, cfg.Set, cfg.Dir, bucket, cfg.Set, bucket, err)
		}
		c := copiedOf(stats, time.Since(t0), bucket)
		out.Uploaded, upErr = &c, err
	}
	if g.json {
		if err := writeJSON(g.stdout, out); err != nil {
			return err
		}
		return upErr
	}
	st := res.Stats
	w := g.stdout
	fmt.Fprintf(w, "checkpoint %d of %s (%s, QEMU %s, %s): guest paused %.1f ms, %s in all\n", m.Seq, o.guest(),
		m.Machine.Type, m.QEMUVersion, m.Method, st.GuestPauseMS, (time.Duration(st.DurationMS * 1e6)).Round(time.Millisecond))
	if st.GuestPauseMS > 100 && m.Method == capture.MethodBackground {
		fmt.Fprintf(w, "  (a long pause: QEMU write-protects every page of guest RAM while the guest is paused; on huge pages that takes milliseconds: see 'ntc checkpoint --help')\n")
	}
	fmt.Fprintf(w, "  RAM    %s in %d blocks, %d pages of data: %d new to the repository (%s)\n",
		humanBytes(st.RAMBytes), len(m.RAM), st.RAMPages, st.RAMPagesNew, humanBytes(st.RAMBytesNew))
	for _, d := range m.Disks {
		if d.Mode == "incremental" {
			fmt.Fprintf(w, "  disk   %s (%s): %s written since checkpoint %d, %s read\n",
				d.Name, humanBytes(d.Size), humanBytes(d.BytesChanged), m.Parent, humanBytes(d.BytesRead))
		} else {
			fmt.Fprintf(w, "  disk   %s (%s): read in full, %s of data\n", d.Name, humanBytes(d.Size), humanBytes(d.BytesRead))
		}
	}
	if len(m.Disks) > 0 {
		fmt.Fprintf(w, "         %d new chunks (%s) stored\n", st.DiskChunksNew, humanBytes(st.DiskBytesNew))
	}
	fmt.Fprintf(w, "  device state %s; migration stream %s\n", humanBytes(st.DeviceBytes), humanBytes(st.StreamBytes))
	if st.Committed > 0 {
		fmt.Fprintf(w, "  merged %d old overlay(s) into the disk images\n", st.Committed)
	}
	if st.CommitError != "" {
		fmt.Fprintf(w, "  could not merge old overlays (the next checkpoint retries): %s\n", st.CommitError)
	}
	fmt.Fprintf(w, "  version %d of %s in %s (%s)\n", m.Seq, cfg.Set, cfg.Dir, res.Version.Digest.Short())
	if out.Uploaded != nil {
		printCopied(g, "  uploaded", *out.Uploaded)
	}
	if upErr != nil {
		return fmt.Errorf("%w: kept beside the bucket's current version ('ntc upload %s --to %s --force' makes it current)", upErr, cfg.Set, bucket)
	}
	return nil
}
