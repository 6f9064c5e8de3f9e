package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	gosync "sync"
	"time"

	"github.com/spf13/cobra"

	ntcsync "github.com/ntc-project/ntc/sync"
	"github.com/ntc-project/ntc/transport"
)

type serveOptions struct {
	listen string
	store  string
	allow  []string
	keep   int
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

With --keep N only the newest N versions of each set are kept: older ones
are removed after each push, and the chunks no kept version needs are dropped
from the store (their space is given back once a pack is mostly such
chunks). Continuous replication ('ntc replicate') adds a version every few
seconds: give its receiver a --keep.

Examples:
  ntc serve --listen :7400 --store ~/vms --allow TYA6ZIM-V6MAQKO-...
  ntc serve --listen :7400 --store ~/vms --allow TYA6ZIM-V6MAQKO-... --keep 10

'ntc ls --store DIR' lists what was received.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.listen = g.v.GetString("serve.listen")
			o.store = g.v.GetString("serve.store")
			o.keep = g.v.GetInt("serve.keep")
			if len(o.allow) == 0 {
				o.allow = g.v.GetStringSlice("serve.allow")
			}
			return runServe(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.String("listen", ":7400", "UDP address to listen on")
	f.String("store", "", "repository directory (created if needed)")
	f.StringArrayVar(&o.allow, "allow", nil, "node ID allowed to push (repeatable; or serve.allow in the config)")
	g.bind(cmd, "serve.listen", "listen")
	f.Int("keep", 0, "versions of each set to keep (0: all); older ones and the chunks only they need are removed")
	g.bind(cmd, "serve.store", "store")
	g.bind(cmd, "serve.keep", "keep")
	return cmd
}

type listeningJSON struct {
	Event string `json:"event"`
	Addr  string `json:"addr"`
	ID    string `json:"id"`
	Store string `json:"store"`
}

func runServe(ctx context.Context, g *globals, o serveOptions) error {
	if o.store == "" {
		return usagef("serve needs --store DIR (where received versions are kept)")
	}
	if o.keep < 0 {
		return usagef("--keep %d: want 0 (keep every version) or how many versions of each set to keep", o.keep)
	}
	if len(o.allow) == 0 {
		return usagef("serve needs at least one --allow ID: the node IDs that may push (run 'ntc id' on the sender)")
	}
	var allowed []transport.ID
	for _, s := range o.allow {
		id, err := transport.ParseID(s)
		if err != nil {
			return usagef("--allow %q: %v", s, err)
		}
		allowed = append(allowed, id)
	}
	id, err := transport.LoadIdentity(g.home())
	if err != nil {
		return err
	}
	repo, err := ntcsync.OpenRepo(o.store)
	if err != nil {
		return err
	}
	defer repo.Close()
	l, err := transport.Listen(o.listen, id, transport.AllowIDs(allowed...), transport.Config{})
	if err != nil {
		return err
	}
	defer l.Close()
	logger := log.New(g.stderr, "ntc serve: ", log.LstdFlags)
	if g.json {
		writeJSONLine(g.stdout, listeningJSON{Event: "listening", Addr: l.Addr().String(), ID: id.ID().String(), Store: o.store})
	} else {
		fmt.Fprintf(g.stdout, "serving %s on %s as %s (%d peers allowed)\n", o.store, l.Addr(), id.ID(), len(allowed))
	}
	rcv := &ntcsync.Receiver{Repo: repo, Log: logger.Printf, Keep: o.keep}
	var wg gosync.WaitGroup
	defer wg.Wait()
	if o.keep > 0 {
		// Pushes collect garbage as they end, when no other is under way;
		// this catches the moments between pushes that always overlap.
		wg.Go(func() {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				rcv.CollectIfWanted(ctx)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	for {
		c, err := l.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				logger.Printf("stopping: pushes in progress are abandoned; their sets keep their previous version")
				return nil
			}
			if errors.Is(err, transport.ErrPeerNotAllowed) {
				logger.Printf("refused a peer: %v", err)
				continue
			}
			return err
		}
		wg.Go(func() {
			defer c.Close()
			rcv.Serve(ctx, c)
		})
	}
}
