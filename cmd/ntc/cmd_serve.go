package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/ratelimit"
	"github.com/ntc-project/ntc/internal/sdnotify"
	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

type serveOptions struct {
	listen string
	store  string
	allow  []string
	keep   string
	// resumeAllow are the peers that may ask for a resume (a hand-off).
	resumeAllow []string
	// maxMemory is the ceiling for serve's memory whatever peers send;
	// stall how long a push may make no progress; conns and peerConns
	// bound connections (all peers, one peer); handshakes the connection
	// attempts a second from one address.
	maxMemory  string
	stall      time.Duration
	conns      int
	peerConns  int
	pushes     int
	handshakes float64
	metrics    string
}

func newServeCommand(g *globals) *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve --store DIR --allow ID [--allow ID ...]",
		Short: "Receive pushes into a repository",
		Long: `Serve receives versions pushed by the peers it allows (by node ID: see 'ntc id')
over QUIC and keeps them in DIR: a chunk store, every committed version's
indexes, and the current version of each set as image files under
DIR/sets/SET/images/. A push commits atomically: until it is complete the
previous version stays current and intact. Peers not allowed are refused
before anything is written.

With --keep only some versions of each set are kept: --keep N keeps the newest
N, --keep last=10,hourly=24,daily=7,weekly=4 (any of them) also the newest of
each of the last hours, days and ISO weeks. The others are removed after each
push (never the current version, nor the tip of a copy that diverged), and the
chunks no kept version needs are dropped from the store (their space is given
back once a pack is mostly such chunks). Continuous replication ('ntc
replicate') adds a version every few seconds: give its receiver a --keep.

A push whose sender's lineage does not continue the current version (both
copies ran since their common version) is stored but not made current; the
log says so, 'ntc ls' lists it as diverged, and 'ntc push --force' makes it
current.

With --images on-demand (serve.images) commits write no image files, so DIR
keeps each image once, in its packs: 'ntc resume' (and a hand-off) first
writes the version it runs from the packs, in full the first time and then
only what changed since the version the files hold; 'ntc restore' reads the
packs in either mode. The default, --images commit, writes them at each push,
so a resume starts at once, at the price of a second copy of every image.

Examples:
  ntc serve --listen :7400 --store ~/vms --allow TYA6ZIM-V6MAQKO-...
  ntc serve --listen :7400 --store ~/vms --allow TYA6ZIM-V6MAQKO-... --keep 10

'ntc ls --store DIR' lists what was received.

--store s3://BUCKET/PREFIX keeps the repository in an S3 bucket instead
(credentials as for 'ntc pull'): several serves, on several machines, may
receive into one bucket. Images are then written on demand ('ntc restore',
'ntc resume') under $NTC_HOME/cache/s3/, which also keeps the chunks read
and written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.listen = g.v.GetString("serve.listen")
			o.store = g.v.GetString("serve.store")
			o.keep = g.v.GetString("serve.keep")
			o.maxMemory = g.v.GetString("serve.max-memory")
			o.stall = g.v.GetDuration("serve.stall-timeout")
			o.conns = g.v.GetInt("serve.max-conns")
			o.peerConns = g.v.GetInt("serve.max-conns-per-peer")
			o.pushes = g.v.GetInt("serve.max-pushes-per-peer")
			o.handshakes = g.v.GetFloat64("serve.handshakes-per-second")
			o.metrics = g.v.GetString("serve.metrics-listen")
			if len(o.allow) == 0 {
				o.allow = g.v.GetStringSlice("serve.allow")
			}
			if len(o.resumeAllow) == 0 {
				o.resumeAllow = g.v.GetStringSlice("serve.resume-allow")
			}
			return runServe(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.String("listen", ":7400", "UDP address to listen on")
	f.String("store", "", "repository directory (created if needed), or s3://BUCKET/PREFIX")
	f.String("s3-endpoint", "", "URL of an S3 server other than AWS, for --store s3://… (default: $AWS_ENDPOINT_URL)")
	g.bind(cmd, "s3.endpoint", "s3-endpoint")
	f.StringArrayVar(&o.allow, "allow", nil, "node ID (or peer name from the configuration) allowed to push (repeatable; or serve.allow)")
	f.StringArrayVar(&o.resumeAllow, "resume-allow", nil, "node ID or peer name that may hand a VM over and have it resumed here (repeatable; or serve.resume-allow; default: none)")
	g.bind(cmd, "serve.listen", "listen")
	f.String("keep", "0", "versions of each set to keep: N (the newest N), or last=N,hourly=N,daily=N,weekly=N; 0: all")
	g.bind(cmd, "serve.store", "store")
	g.bind(cmd, "serve.keep", "keep")
	f.String("images", imagesAtCommit, "when to write received images as files: commit (each push; a resume starts at once) or on-demand (when a resume needs them: the store keeps each image once)")
	g.bind(cmd, "serve.images", "images")
	f.String("max-memory", "256M", "memory ceiling whatever peers send: pushes that would need more wait, then fail")
	f.Duration("stall-timeout", ntcsync.DefaultLimits.Stall, "end a push whose peer sends (or reads) nothing for this long, releasing its set")
	f.Int("max-conns", 16, "connections from all peers together")
	f.Int("max-conns-per-peer", 8, "connections from one peer")
	f.Int("max-pushes-per-peer", ntcsync.DefaultLimits.PushesPerPeer, "pushes in progress from one peer")
	f.Float64("handshakes-per-second", 20, "connection attempts a second from one address (bursts of twice as many)")
	f.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9474)")
	for _, name := range []string{"max-memory", "stall-timeout", "max-conns", "max-conns-per-peer", "max-pushes-per-peer", "handshakes-per-second", "metrics-listen"} {
		g.bind(cmd, "serve."+name, name)
	}
	return cmd
}

type listeningJSON struct {
	Event string `json:"event"`
	Addr  string `json:"addr"`
	ID    string `json:"id"`
	Store string `json:"store"`
}

// Memory serve sets aside from its ceiling: the runtime, quic-go and
// what is not counted per push (the store's index, sockets).
const serveBaseMemory = 48 << 20

// serveWindow is each connection's receive window: what quic-go may
// buffer for it when serve does not read. 4 MiB keeps a 400 Mbit/s path
// of 80 ms full per connection; pushes on long paths use several.
const serveWindow = 4 << 20

func runServe(ctx context.Context, g *globals, o serveOptions) error {
	if o.store == "" {
		return usagef("serve needs --store DIR (where received versions are kept)")
	}
	keep, err := repo.ParsePolicy(o.keep)
	if err != nil {
		return usagef("--%v", err)
	}
	if len(o.allow) == 0 {
		return usagef("serve needs at least one --allow ID: the node IDs that may push (run 'ntc id' on the sender)")
	}
	var allowed, resumers []transport.ID
	for _, s := range o.allow {
		id, err := g.peerID(s)
		if err != nil {
			return usagef("--allow %q: %v", s, err)
		}
		allowed = append(allowed, id)
	}
	for _, s := range o.resumeAllow {
		id, err := g.peerID(s)
		if err != nil {
			return usagef("--resume-allow %q: %v", s, err)
		}
		if !slices.Contains(allowed, id) {
			return usagef("--resume-allow %s: allow it to push first (--allow)", s)
		}
		resumers = append(resumers, id)
	}
	if err := g.checkServeResume(len(resumers) > 0); err != nil {
		return err
	}
	lim, tcfg, err := o.limits(len(allowed))
	if err != nil {
		return err
	}
	id, err := transport.LoadIdentity(g.home())
	if err != nil {
		return err
	}
	lg, err := g.logger("serve")
	if err != nil {
		return err
	}
	refusals := &refusalLog{log: lg, rate: ratelimit.Keyed{Rate: 1, Burst: 5}}
	tcfg.Limits.Refused = refusals.transport
	l, err := transport.Listen(o.listen, id, transport.AllowIDs(allowed...), tcfg)
	if err != nil {
		return err
	}
	defer l.Close()
	// The repository is created only once serve can listen: a serve that
	// cannot bind leaves nothing behind.
	repo, closeRepo, err := g.openServeRepo(ctx, o.store, len(resumers), g.v.GetString("serve.images"))
	if err != nil {
		return err
	}
	defer closeRepo()
	if g.json {
		writeJSONLine(g.stdout, listeningJSON{Event: "listening", Addr: l.Addr().String(), ID: id.ID().String(), Store: o.store})
	} else {
		fmt.Fprintf(g.stdout, "serving %s on %s as %s (%d peers allowed)\n", o.store, l.Addr(), id.ID(), len(allowed))
	}
	rcv := &ntcsync.Receiver{Repo: repo, Logger: lg, Keep: keep, Limits: lim, Refused: refusals.push}
	if len(resumers) > 0 {
		rcv.Resume = g.resumer(o.store, resumers)
	}
	var wg gosync.WaitGroup
	defer wg.Wait()
	if o.metrics != "" {
		reg := newRegistry()
		reg.MustRegister(newServeCollector(repo, refusals))
		addr, err := serveMetrics(ctx, o.metrics, reg)
		if err != nil {
			return err
		}
		lg.Info("metrics at http://" + addr.String() + "/metrics")
	}
	// Under systemd (Type=notify): ready once listening, signs of life for
	// the watchdog while the accept loop runs, stopping at the end.
	sd := sdnotify.FromEnv()
	sd.Ready(fmt.Sprintf("serving %s on %s (%d peers allowed)", o.store, l.Addr(), len(allowed)))
	defer sd.Stopping("")
	wg.Go(func() { sd.Watchdog(ctx, nil) })
	if err := rcv.ServeListener(ctx, l); err != nil {
		return err
	}
	lg.Info("stopping: pushes in progress are abandoned; their sets keep their previous version")
	return nil
}

// limits turns the options into the receiver's and the listener's
// limits, and sets the process's memory limit as a backstop.
func (o serveOptions) limits(peers int) (ntcsync.Limits, transport.Config, error) {
	ceiling, err := chunk.ParseSize(o.maxMemory)
	if err != nil {
		return ntcsync.Limits{}, transport.Config{}, usagef("--max-memory %q: %v", o.maxMemory, err)
	}
	if o.conns <= 0 || o.peerConns <= 0 || o.pushes <= 0 || o.handshakes <= 0 || o.stall <= 0 {
		return ntcsync.Limits{}, transport.Config{}, usagef("--max-conns, --max-conns-per-peer, --max-pushes-per-peer, --handshakes-per-second and --stall-timeout must be positive")
	}
	// What quic-go may buffer, and what serve needs anyway, come off the
	// ceiling; pushes share the rest.
	pushes := ceiling - serveBaseMemory - int64(o.conns)*serveWindow
	if pushes < 16<<20 {
		return ntcsync.Limits{}, transport.Config{}, usagef("--max-memory %s leaves %d MiB for pushes with %d connections of %d MiB windows: raise it to at least %d MiB, or lower --max-conns",
			o.maxMemory, max(pushes, 0)>>20, o.conns, serveWindow>>20, (serveBaseMemory+int64(o.conns)*serveWindow+16<<20)>>20)
	}
	lim := ntcsync.Limits{Memory: pushes, PeerMemory: pushes, PushesPerPeer: o.pushes, Stall: o.stall}
	if peers > 1 {
		lim.PeerMemory = pushes / 2 // no one peer can starve the others
	}
	// The garbage collector works harder near the ceiling rather than
	// let garbage take serve past it.
	debug.SetMemoryLimit(ceiling * 7 / 8)
	tcfg := transport.Config{
		MaxStreamReceiveWindow:     serveWindow,
		MaxConnectionReceiveWindow: serveWindow,
		Limits: transport.Limits{
			HandshakesPerSecond: o.handshakes,
			HandshakeBurst:      int(2 * o.handshakes),
			RetryAbove:          o.conns,
			ConnsPerPeer:        o.peerConns,
			MaxConns:            o.conns,
		},
	}
	return lim, tcfg, nil
}

// refusalLog logs refused peers and failed pushes (warnings), at most a
// few a second for each peer (or address, before the peer is known), with
// how many were left out (not_logged).
type refusalLog struct {
	log  *slog.Logger
	rate ratelimit.Keyed
	// n counts refusals, logged or not (ntc_serve_refusals_total).
	n atomic.Int64
}

func (r *refusalLog) warn(key, msg string, args ...any) {
	r.n.Add(1)
	ok, dropped := r.rate.Allow(key)
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "not_logged", dropped)
	}
	r.log.Warn(msg, args...)
}

func (r *refusalLog) transport(f transport.Refusal) {
	host := f.Addr.String()
	if ua, ok := f.Addr.(*net.UDPAddr); ok {
		host = ua.IP.String()
	}
	if f.Peer.IsZero() {
		r.warn(host, "refused a connection", "addr", f.Addr, "err", f.Err)
		return
	}
	r.warn(f.Peer.String(), "refused a peer", "peer", f.Peer, "addr", f.Addr, "err", f.Err)
}

func (r *refusalLog) push(peer transport.ID, addr net.Addr, err error) {
	r.warn(peer.String(), "push failed", "peer", peer, "addr", addr, "err", err)
}
