package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	ntcsync "github.com/ntc-project/ntc/sync"
)

// statusJSON is 'ntc status --json'.
type statusJSON struct {
	Replicating []replicatingJSON `json:"replicating"`
	Received    []receivedJSON    `json:"received,omitempty"`
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
	var store string
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

Examples:
  ntc status
  ntc status vm --json
  ntc status --store /var/lib/ntc/repo`,
		RunE: func(cmd *cobra.Command, args []string) error {
			store = g.v.GetString("serve.store")
			return runStatus(g, store, args, time.Now())
		},
	}
	cmd.Flags().StringVar(&store, "store", "", "also list what this receiver's repository holds")
	g.bind(cmd, "serve.store", "store")
	return cmd
}

func runStatus(g *globals, store string, sets []string, now time.Time) error {
	sts, err := readStatuses(g.home())
	if err != nil {
		return err
	}
	out := statusJSON{Replicating: []replicatingJSON{}}
	for _, s := range sts {
		if len(sets) > 0 && !slices.Contains(sets, s.Set) {
			continue
		}
		r := replicatingJSON{replicateStatus: *s, Running: s.running()}
		if s.HeldInstant != nil {
			r.LosesMS = float64(now.Sub(*s.HeldInstant).Microseconds()) / 1000
		}
		out.Replicating = append(out.Replicating, r)
	}
	if store != "" {
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
	}
	if g.json {
		return writeJSON(g.stdout, out)
	}
	if len(out.Replicating) == 0 && len(out.Received) == 0 {
		fmt.Fprintf(g.stdout, "nothing replicates from this node (no 'ntc replicate' has run as %s)\n", g.home())
		if store == "" {
			fmt.Fprintln(g.stdout, "give --store DIR to see what a receiver holds")
		}
		return nil
	}
	for _, r := range out.Replicating {
		fmt.Fprint(g.stdout, r.describe(now))
	}
	for _, r := range out.Received {
		fmt.Fprintf(g.stdout, "%s received: version %d of %s (%s ago), %d kept\n", r.Set, r.Version,
			r.Received.Local().Format(time.DateTime), time.Duration(r.AgeMS*float64(time.Millisecond)).Round(time.Second), r.Versions)
	}
	return nil
}
