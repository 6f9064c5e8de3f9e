package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/repo"
)

type forgetOptions struct {
	store    string
	versions []uint
	dryRun   bool
	force    bool
}

func newForgetCommand(g *globals) *cobra.Command {
	var o forgetOptions
	cmd := &cobra.Command{
		Use:   "forget SET [--version N]... [--store DIR]",
		Short: "Remove a set, or some of its versions, from a repository and give back their space",
		Long: `Forget removes set SET from a repository (a receiver's 'ntc serve --store DIR'
or this node's own), or with --version only the versions named (their numbers
as 'ntc ls' lists them), then collects the chunks that nothing left refers to,
as restic's forget and prune do together. Other sets and versions stay intact
and restorable, whatever chunks they share with what is removed.

The current version of a set is never removed alone: forget the whole set, or
push a newer version first. Without --force it also refuses what a copy
still needs:
  - a set this node runs (a copy resumed here, or a VM checkpointed here: its
    overlays and its next checkpoint build on the set);
  - the version a copy runs from, here or at another node (the base of that
    copy's next checkpoint and of its hand-off back);
  - a set, or the version, of a hand-off that waits to be finished
    ('ntc sync --handoff' run again finishes it).

The space comes back as the collection can give it: the chunks only the
removed versions used are dropped at once, and a pack file is rewritten
without them once at least half of it is such chunks (the pack being
appended to only from 64 MiB): forget says what was freed and what stays in
packs until later collections. --dry-run says what would be removed and how
much data only it uses, and changes nothing.

Run it while no push of SET is under way: it waits for a push in progress
to release the store before collecting, and a push arriving afterwards
creates the set anew.`,
		Example: `  ntc forget office-vm --store ~/vms --dry-run
  ntc forget office-vm --store ~/vms
  ntc forget office-vm --version 3 --version 4 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runForget(cmd.Context(), g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.store, "store", "", "the repository (default: the configuration's repo, or $NTC_HOME/repo)")
	f.UintSliceVar(&o.versions, "version", nil, "remove only this version (repeatable); default: the whole set")
	f.BoolVar(&o.dryRun, "dry-run", false, "say what would be removed and freed, change nothing")
	f.BoolVar(&o.force, "force", false, "remove also what a running copy or a pending hand-off needs")
	return cmd
}

// forgetJSON is 'ntc forget --json'.
type forgetJSON struct {
	Set      string   `json:"set"`
	Store    string   `json:"store"`
	WholeSet bool     `json:"whole_set"`
	Versions []uint64 `json:"versions"`
	DryRun   bool     `json:"dry_run"`
	// Forced are the refusals --force overrode.
	Forced []string `json:"forced,omitempty"`
	// OnlyChunks and OnlyBytes are what only the removed versions used:
	// chunks no other version refers to, and their data (uncompressed).
	OnlyChunks int   `json:"only_chunks"`
	OnlyBytes  int64 `json:"only_bytes"`
	// What the collection did: chunks dropped, pack bytes given back, and
	// the store's pack files before and after.
	ChunksDropped    int   `json:"chunks_dropped"`
	BytesFreed       int64 `json:"bytes_freed"`
	StoreBytesBefore int64 `json:"store_bytes_before"`
	StoreBytesAfter  int64 `json:"store_bytes_after"`
}

func runForget(ctx context.Context, g *globals, o forgetOptions, set string) error {
	if err := repo.CheckName(set); err != nil {
		return usagef("%v", err)
	}
	store := o.store
	if store == "" {
		store = g.repoDir()
	}
	nodes, err := repo.OpenExisting(store)
	if err != nil {
		return err
	}
	if sets, err := nodes.Sets(); err != nil {
		return err
	} else if !slices.Contains(sets, set) {
		return fmt.Errorf("%s holds no set %q: 'ntc ls --store %s' lists them", store, set, store)
	}
	out := forgetJSON{Set: set, Store: store, WholeSet: len(o.versions) == 0, DryRun: o.dryRun}
	vs, err := nodes.Versions(set)
	if err != nil {
		return err
	}
	head, err := nodes.Head(set)
	if err != nil {
		return err
	}
	chosen := map[uint64]*repo.Version{}
	for _, v := range vs {
		if out.WholeSet || slices.Contains(o.versions, uint(v.Seq)) {
			chosen[v.Seq] = v
		}
	}
	for _, n := range o.versions {
		switch v := chosen[uint64(n)]; {
		case v == nil:
			return usagef("%s has no version %d: 'ntc ls --store %s' lists its versions", set, n, store)
		case head != nil && v.Seq == head.Seq:
			return fmt.Errorf("version %d is the current version of %s: forget the whole set (ntc forget %s), or push a newer version first", n, set, set)
		}
	}
	for seq := range chosen {
		out.Versions = append(out.Versions, seq)
	}
	slices.Sort(out.Versions)

	needs, err := forgetNeeds(g, nodes, store, set, out.WholeSet, chosen)
	if err != nil {
		return err
	}
	if len(needs) > 0 && !o.force {
		return fmt.Errorf("not forgetting %s: %s; --force removes it anyway", set, strings.Join(needs, "; "))
	}
	out.Forced = needs
	fp, err := nodes.FootprintOf(ctx, func(s string, seq uint64) bool { return s == set && chosen[seq] != nil })
	if err != nil {
		return err
	}
	out.OnlyChunks, out.OnlyBytes = fp.Chunks, fp.Bytes
	if _, out.StoreBytesBefore, err = storeUsage(store); err != nil {
		return err
	}
	out.StoreBytesAfter = out.StoreBytesBefore
	if o.dryRun {
		return printForget(g, out)
	}

	if out.WholeSet {
		err = nodes.RemoveSet(ctx, set)
	} else {
		for _, seq := range out.Versions {
			if err = nodes.Remove(ctx, set, seq); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("forget %s: %w", set, err)
	}
	st, err := nodes.OpenStore(ctx)
	if err != nil {
		return fmt.Errorf("forgot %s, but collecting its chunks failed: %w (the next collection, 'ntc serve --keep', drops them)", set, err)
	}
	cs, err := nodes.Collect(ctx, st)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("forgot %s, but collecting its chunks failed: %w", set, err)
	}
	out.ChunksDropped, out.BytesFreed = cs.ChunksDropped, cs.BytesFreed
	if _, out.StoreBytesAfter, err = storeUsage(store); err != nil {
		return err
	}
	return printForget(g, out)
}

// forgetNeeds lists what a copy or a hand-off still needs of the set (the
// whole set, or the versions chosen).
func forgetNeeds(g *globals, nodes *repo.Repo, store, set string, whole bool, chosen map[uint64]*repo.Version) ([]string, error) {
	var needs []string
	seqOf := func(d repo.Digest) (uint64, bool) {
		for seq, v := range chosen {
			if v.Digest == d {
				return seq, true
			}
		}
		return 0, false
	}
	rn, err := nodes.Runner(set)
	if err != nil && !errors.Is(err, repo.ErrNotFound) {
		return nil, err
	}
	if rn != nil && rn.Node != "" {
		where := "node " + rn.Node
		if rn.Node == g.nodeName() {
			where = "this node"
		}
		if seq, ok := seqOf(rn.Version); ok && !whole {
			needs = append(needs, fmt.Sprintf("%s runs %s from version %d (the base of its next checkpoint and of a hand-off back)", where, set, seq))
		} else if whole && rn.Node == g.nodeName() {
			needs = append(needs, fmt.Sprintf("this node runs %s (a copy resumed here, or a VM checkpointed here: it builds on the set)", set))
		}
	}
	if ph, ok := readPending(pendingPath(store, set)); ok {
		if _, in := seqOf(ph.Digest); in || whole {
			needs = append(needs, fmt.Sprintf("a hand-off of %s with version %d waits to be finished ('ntc sync %s --to ... --handoff' finishes it)", set, ph.Seq, set))
		}
	}
	return needs, nil
}

func printForget(g *globals, o forgetJSON) error {
	if g.json {
		return writeJSON(g.stdout, o)
	}
	what := fmt.Sprintf("%s (%s)", o.Set, versionList(o.Versions))
	if !o.WholeSet {
		what = fmt.Sprintf("%s of %s", versionList(o.Versions), o.Set)
	}
	only := fmt.Sprintf("%d chunks, %s of data, only they used", o.OnlyChunks, humanBytes(o.OnlyBytes))
	if o.DryRun {
		fmt.Fprintf(g.stdout, "would forget %s: %s; the store's packs hold %s (nothing changed: --dry-run)\n", what, only, humanBytes(o.StoreBytesBefore))
		return nil
	}
	fmt.Fprintf(g.stdout, "forgot %s: %s; %d chunks dropped, the store's packs went from %s to %s\n",
		what, only, o.ChunksDropped, humanBytes(o.StoreBytesBefore), humanBytes(o.StoreBytesAfter))
	if o.ChunksDropped > 0 && o.StoreBytesBefore-o.StoreBytesAfter < o.OnlyBytes/2 {
		fmt.Fprintln(g.stdout, "  the rest of their space comes back when a collection finds their packs mostly unused (the pack being written to from 64 MiB)")
	}
	for _, f := range o.Forced {
		fmt.Fprintf(g.stdout, "  --force: %s\n", f)
	}
	return nil
}

// versionList says "versions 1, 2, 5", "version 3", or "no versions".
func versionList(seqs []uint64) string {
	switch len(seqs) {
	case 0:
		return "no versions"
	case 1:
		return fmt.Sprintf("version %d", seqs[0])
	}
	s := make([]string, len(seqs))
	for i, n := range seqs {
		s[i] = fmt.Sprint(n)
	}
	return "versions " + strings.Join(s, ", ")
}
