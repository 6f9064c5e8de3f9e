package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"github.com/spf13/cobra"

	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

// statusJSON is 'ntc status --json'.
type statusJSON struct {
	Replicating []replicatingJSON `json:"replicating"`
	Received    []receivedJSON    `json:"received,omitempty"`
	// Peers is what each peer asked ('ntc serve' there) holds.
	Peers []peerStatusJSON `json:"peers,omitempty"`
}

// peerStatusJSON is one peer's answer, or why there is none.
type peerStatusJSON struct {
	Peer string `json:"peer"` // its name in the configuration, or its address
	Addr string `json:"addr"`
	ID   string `json:"id"`
	// LatencyMS is the time from dialing to the answer.
	LatencyMS float64 `json:"latency_ms"`
	// Now is the peer's clock as it answered; ages are measured from it.
	Now   *time.Time    `json:"now,omitempty"`
	Sets  []peerSetJSON `json:"sets,omitempty"`
	Error string        `json:"error,omitempty"`
	// err is Error's error, for its hints.
	err error
}

type peerSetJSON struct {
	ntcsync.SetStatus
	// AgeMS is the current version's age at the peer: what a failure of
	// the sender now would lose.
	AgeMS float64 `json:"age_ms"`
	// SenderName is the sender's name in the configuration, or "this
	// node".
	SenderName string `json:"sender_name,omitempty"`
}

type statusOptions struct {
	store string
	// peers are the peers to ask (names, or ID@HOST:PORT); none: every
	// peer of the configuration, unless local.
	peers []string
	local bool
}

type replicatingJSON struct {
	replicateStatus
	Running bool `json:"running"`
	// LosesMS is the guest's work a failure now would lose: the time since
	// the instant of the checkpoint the receiver holds.
	LosesMS float64 `json:"loses_ms,omitempty"`
}

type receivedJSON struct {
	Set      string    `json:"set"`
	Version  uint64    `json:"version"`
	Versions int       `json:"versions"`
	Received time.Time `json:"received"`
	AgeMS    float64   `json:"age_ms"`
	Sender   string    `json:"sender,omitempty"`
}

func newStatusCommand(g *globals) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status [SET...]",
		Short: "Show how far behind each copy is",
		Long: `Status shows, for each VM this node replicates ('ntc replicate', as recorded
under $NTC_HOME/status after every round), whether replication runs, which
checkpoint the receiver holds and how much of the guest's work a failure now
would lose, the last round's guest pause, bytes, duration and rate, when
replication last succeeded and its last error. With --store (or serve.store
in the configuration) it also lists the sets this node received, with the
age of each one's current version.

It also asks each peer of the configuration (or those given with --peer) what
its 'ntc serve' holds: for each set, the newest complete version, its instant
and age (by the peer's clock), who sent it and how many versions are kept. A
peer answers the nodes it accepts pushes from. --local asks no peer.

Examples:
  ntc status
  ntc status vm --json
  ntc status --peer home
  ntc status --peer home.example:7400
  ntc status --peer TYA6ZIM-...@home.example:7400
  ntc status --store /var/lib/ntc/repo --local`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.store = g.v.GetString("serve.store")
			return runStatus(cmd.Context(), g, o, args, time.Now())
		},
	}
	cmd.Flags().String("store", "", "also list what this receiver's repository holds")
	cmd.Flags().StringArrayVar(&o.peers, "peer", nil, "ask this peer: its name or address in the configuration, or ID@HOST:PORT (repeatable; default: every peer of the configuration)")
	cmd.Flags().BoolVar(&o.local, "local", false, "ask no peer: only what this node records and holds")
	g.bind(cmd, "serve.store", "store")
	return cmd
}

func runStatus(ctx context.Context, g *globals, o statusOptions, sets []string, now time.Time) error {
	if o.local && len(o.peers) > 0 {
		return usagef("--local asks no peer: give --peer or --local, not both")
	}
	out := statusJSON{Replicating: []replicatingJSON{}}
	if err := localStatus(g, o.store, sets, now, &out); err != nil {
		return err
	}
	var failed error
	if !o.local {
		peers, err := g.statusPeers(o.peers)
		if err != nil {
			return err
		}
		out.Peers = askPeers(ctx, g, peers, sets)
		for i, ps := range out.Peers {
			// A peer asked for by name must answer; the configuration's
			// peers are reported as they are.
			if ps.err != nil && len(o.peers) > 0 && failed == nil {
				failed = fmt.Errorf("status at %s: %w", peers[i].Name, ps.err)
			}
		}
	}
	if g.json {
		if err := writeJSON(g.stdout, out); err != nil {
			return err
		}
		return failed
	}
	// The error a failed command returns brings its own hint (main).
	printStatus(g, out, o.store, now, failed == nil)
	return failed
}

// localStatus fills out with what this node records (replicate's status
// files) and, with store, what its repository holds.
func localStatus(g *globals, store string, sets []string, now time.Time, out *statusJSON) error {
	sts, err := readStatuses(g.home())
	if err != nil {
		return err
	}
	for _, s := range sts {
		if len(sets) > 0 && !slices.Contains(sets, s.Set) {
			continue
		}
		r := replicatingJSON{replicateStatus: *s, Running: s.running()}
		if s.HeldInstant != nil {
			r.LosesMS = ms(now.Sub(*s.HeldInstant))
		}
		out.Replicating = append(out.Replicating, r)
	}
	if store == "" {
		return nil
	}
	repo, err := ntcsync.OpenRepoForReading(store)
	if err != nil {
		return err
	}
	list, err := repo.List()
	if err != nil {
		return err
	}
	for _, si := range list {
		if si.Current == nil || (len(sets) > 0 && !slices.Contains(sets, si.Set)) {
			continue
		}
		out.Received = append(out.Received, receivedJSON{Set: si.Set, Version: si.Current.Version, Versions: len(si.Versions),
			Received: si.Current.Created, AgeMS: float64(now.Sub(si.Current.Created).Milliseconds()), Sender: si.Current.Sender})
	}
	return nil
}

// statusPeers resolves --peer: names of the configuration, the address
// of one of its peers, or ID@HOST:PORT; none: every peer of the
// configuration.
func (g *globals) statusPeers(args []string) ([]peer, error) {
	if len(args) == 0 {
		args = g.sortedNames("peers")
	}
	var out []peer
	for _, a := range args {
		if id, addr, ok := strings.Cut(a, "@"); ok {
			pid, err := transport.ParseID(id)
			if err != nil || addr == "" {
				return nil, usagef("--peer %q: want a peer's name in the configuration, or ID@HOST:PORT (%v)", a, err)
			}
			out = append(out, peerAddr(addr, pid))
			continue
		}
		if name := g.peerAt(a); name != "" {
			a = name
		}
		p, err := g.peerNamed(a)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// peerAt returns the name of the configuration's peer at address addr,
// or "".
func (g *globals) peerAt(addr string) string {
	for _, name := range g.sortedNames("peers") {
		if g.v.GetString("peers."+name+".addr") == addr {
			return name
		}
	}
	return ""
}

// peerStatusTimeout bounds how long status waits for one peer.
const peerStatusTimeout = 10 * time.Second

// askPeers asks every peer, together, what it holds of sets (none: all).
func askPeers(ctx context.Context, g *globals, peers []peer, sets []string) []peerStatusJSON {
	out := make([]peerStatusJSON, len(peers))
	if len(peers) == 0 {
		return out
	}
	d, err := g.newDialer()
	var wg gosync.WaitGroup
	for i, p := range peers {
		out[i] = peerStatusJSON{Peer: p.Name, Addr: p.Addr, ID: p.ID.String()}
		if err != nil {
			out[i].Error, out[i].err = err.Error(), err
			continue
		}
		wg.Go(func() {
			t0 := time.Now()
			st, err := askPeer(ctx, d, p, sets)
			out[i].LatencyMS = ms(time.Since(t0))
			if err != nil {
				out[i].Error, out[i].err = err.Error(), err
				return
			}
			out[i].Now = &st.Now
			for _, s := range st.Sets {
				out[i].Sets = append(out[i].Sets, peerSetJSON{SetStatus: s, AgeMS: ms(st.Now.Sub(s.Created)),
					SenderName: g.nodeCalled(s.Sender, d.id.ID())})
			}
		})
	}
	wg.Wait()
	return out
}

// askPeer dials p and asks for its status.
func askPeer(ctx context.Context, d *dialer, p peer, sets []string) (*ntcsync.PeerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, peerStatusTimeout)
	defer cancel()
	c, err := d.dial(p)(ctx)
	if err != nil {
		return nil, err // transport.ErrNoAnswer and others: hint.go says what to check
	}
	defer c.Close()
	var st *ntcsync.PeerStatus
	if len(sets) > 0 && len(sets) <= 64 {
		st, err = ntcsync.RequestStatus(ctx, c, sets...)
	} else {
		st, err = ntcsync.RequestStatus(ctx, c)
	}
	if re := (*ntcsync.RemoteError)(nil); errors.As(err, &re) && errors.Is(err, ntcsync.ErrMalformed) {
		// A serve older than status requests took it for a push.
		return nil, fmt.Errorf("%w: the peer's ntc may be too old to answer a status request: upgrade it", err)
	}
	if err != nil || len(sets) == 0 || len(sets) <= 64 {
		return st, err
	}
	st.Sets = slices.DeleteFunc(st.Sets, func(s ntcsync.SetStatus) bool { return !slices.Contains(sets, s.Set) })
	return st, nil
}

// nodeCalled names node ID s: "this node", a peer's name in the
// configuration, or "" when it is none of them.
func (g *globals) nodeCalled(s string, self transport.ID) string {
	if s == self.String() {
		return "this node"
	}
	for _, name := range g.sortedNames("peers") {
		if g.v.GetString("peers."+name+".id") == s {
			return name
		}
	}
	return ""
}
