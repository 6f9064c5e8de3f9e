package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
)

type checkOptions struct {
	readData bool
	// setAside has the store forget the damaged chunks found, so that the
	// next push of a version holding them sends them again.
	setAside bool
	subset   string
}

func newCheckCommand(g *globals) *cobra.Command {
	var o checkOptions
	cmd := &cobra.Command{
		Use:   "check DIR|s3://BUCKET/PREFIX",
		Short: "Verify a repository: every version readable, every chunk it needs present (and intact)",
		Long: `Check verifies a repository: a receiver's ('ntc serve --store DIR') or a
checkpoint repository ('ntc checkpoint --out DIR'). Every version's (or
checkpoint's) indexes must read back whole, and every chunk they name must be
in the chunk store. With --read-data every such chunk is also read and its
content hashed against its ID, which finds damage inside the pack files (a
flipped bit on disk); --read-data-subset 10% reads about a tenth of them, the
same tenth each time for the same percentage.

It reads only, and can run while 'ntc serve' or 'ntc replicate' writes the
repository. It names each damaged version and why, and exits with status 1
when it found any: a damaged receiver's copy is healed by pushing again
(the sender resends what is missing). With --set-aside the store of a
receiver's repository also forgets the damaged chunks found (their bytes stay
in the packs until a collection rewrites them), so that the next push of any
version that holds them sends them again, as a receiver does itself with a
damaged chunk it reads during a push; this writes the store, and waits for a
push in progress to end.

Examples:
  ntc check ~/vms
  ntc check ~/vms --read-data
  ntc check ~/vms --read-data --set-aside
  ntc check /srv/ckpt/vm --read-data-subset 5% --json
  ntc check s3://vms/office --read-data`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCheck(cmd, g, args[0], o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.readData, "read-data", false, "read every chunk and verify its content")
	f.StringVar(&o.subset, "read-data-subset", "", "read only this share of the chunks: 10%, 0.1")
	f.BoolVar(&o.setAside, "set-aside", false, "have the store forget the damaged chunks found, so that the next push sends them again")
	addS3EndpointFlag(g, cmd)
	return cmd
}

// parseShare reads "10%" or "0.1" as a fraction in (0, 1].
func parseShare(s string) (float64, error) {
	v, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a share such as 10%% or 0.1", s)
	}
	if pct {
		f /= 100
	}
	if f <= 0 || f > 1 {
		return 0, fmt.Errorf("%q: want more than 0 and at most 100%%", s)
	}
	return f, nil
}

// checkJSON is 'ntc check --json'.
type checkJSON struct {
	*chunk.CheckReport
	// SetAside counts the damaged chunks the store forgot (--set-aside).
	SetAside int `json:"set_aside,omitempty"`
}

func runCheck(cmd *cobra.Command, g *globals, dir string, o checkOptions) error {
	opt := chunk.CheckOptions{ReadData: o.readData || o.subset != ""}
	if o.setAside && !opt.ReadData {
		return usagef("--set-aside needs --read-data (or --read-data-subset): damage is found by reading the chunks")
	}
	if o.subset != "" {
		f, err := parseShare(o.subset)
		if err != nil {
			return usagef("--read-data-subset: %v", err)
		}
		opt.Fraction = f
	}
	var (
		owners []chunk.Owner
		st     interface {
			chunk.Store
			Close() error
		}
		err error
	)
	switch {
	case isS3(dir):
		owners, st, err = g.checkS3(cmd.Context(), dir)
	default:
		if _, err := repo.OpenExisting(dir); errors.Is(err, repo.ErrNotRepo) {
			return usagef("%s is not a repository: give the directory of 'ntc serve --store' or 'ntc checkpoint --out'", dir)
		}
		owners, err = receiverOwners(dir)
		if err == nil {
			st, err = chunk.OpenPackStoreReadOnly(dir)
		}
	}
	if err != nil {
		return err
	}
	defer st.Close()
	rep, err := chunk.Check(cmd.Context(), st, owners, opt)
	if err != nil {
		return err
	}
	out := checkJSON{CheckReport: rep}
	if o.setAside && len(rep.Damaged) > 0 {
		st.Close()
		if err := setAside(cmd.Context(), dir, rep.Damaged); err != nil {
			return err
		}
		out.SetAside = len(rep.Damaged)
	}
	if g.json {
		if err := writeJSON(g.stdout, out); err != nil {
			return err
		}
	} else {
		how := "present"
		if opt.ReadData {
			how = fmt.Sprintf("present, %d read and verified", rep.Read)
		}
		fmt.Fprintf(g.stdout, "%s: %d versions, %d chunks referenced, %s\n", dir, rep.Owners, rep.Chunks, how)
		for _, n := range rep.BrokenNames() {
			fmt.Fprintf(g.stdout, "  %s: damaged: %s\n", n, rep.Broken[n])
		}
		if len(rep.Missing)+len(rep.Damaged) > 0 {
			fmt.Fprintf(g.stdout, "%d chunks missing, %d damaged\n", len(rep.Missing), len(rep.Damaged))
		}
		if out.SetAside > 0 {
			fmt.Fprintf(g.stdout, "set %d damaged chunks aside: the next push of a version that holds them sends them again\n", out.SetAside)
		}
	}
	if !rep.OK() {
		return fmt.Errorf("%d of %d versions in %s are damaged; push them again from the sender to heal the receiver's copy", len(rep.Broken), rep.Owners, dir)
	}
	if !g.json {
		fmt.Fprintln(g.stdout, "no errors")
	}
	return nil
}

// setAside has the chunk store of the receiver's repository in dir forget
// the damaged chunks ids, waiting for a push in progress to end.
func setAside(ctx context.Context, dir string, ids []chunk.ID) error {
	nodes, err := repo.OpenExisting(dir)
	if err != nil {
		return err
	}
	st, err := nodes.OpenStore(ctx)
	if err != nil {
		return fmt.Errorf("set the damaged chunks aside: %w", err)
	}
	for _, id := range ids {
		st.Forget(id)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("set the damaged chunks aside: %w", err)
	}
	return nil
}

type nopCloser struct{ chunk.Store }

func (nopCloser) Close() error { return nil }

// receiverOwners lists every version of every set of a receiver's
// repository with its indexes.
func receiverOwners(dir string) ([]chunk.Owner, error) {
	repo, err := ntcsync.OpenRepoForReading(dir)
	if err != nil {
		return nil, err
	}
	return repoOwners(repo)
}

// repoOwners lists every version of every set of repo with its indexes.
func repoOwners(repo *ntcsync.Repo) ([]chunk.Owner, error) {
	sets, err := repo.List()
	if err != nil {
		return nil, err
	}
	var out []chunk.Owner
	for _, s := range sets {
		for _, v := range s.Versions {
			o := chunk.Owner{Name: fmt.Sprintf("%s v%d", s.Set, v)}
			m, err := repo.Manifest(s.Set, v)
			if err == nil {
				for _, im := range m.Images {
					x, ierr := repo.Index(s.Set, v, im.Name)
					if ierr != nil {
						err = ierr
						break
					}
					o.Indexes = append(o.Indexes, x)
				}
			}
			o.Err = err
			out = append(out, o)
		}
	}
	return out, nil
}
