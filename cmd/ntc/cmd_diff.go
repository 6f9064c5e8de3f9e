package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk"
)

func newDiffCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "diff OLD.idx NEW.idx",
		Short: "Show what a transfer from OLD to NEW would send",
		Long: `Diff compares two indexes of the same image made with the same chunk parameters
and counts the chunks NEW needs that OLD does not hold (what a transfer sends),
the chunks it reuses, and its zero bytes (never sent).`,
		Args: exactArgs(2, "OLD.idx NEW.idx"),
		RunE: func(cmd *cobra.Command, args []string) error {
			old, err := chunk.ReadIndexFile(args[0])
			if err != nil {
				return err
			}
			next, err := chunk.ReadIndexFile(args[1])
			if err != nil {
				return err
			}
			d, err := chunk.Compare(old, next)
			if err != nil {
				return fmt.Errorf("compare %s and %s: %w", args[0], args[1], err)
			}
			if g.json {
				return writeJSON(g.stdout, d)
			}
			fmt.Fprintf(g.stdout, "%s -> %s\n", args[0], args[1])
			fmt.Fprintf(g.stdout, "  new:     %8d chunks  %s\n", d.NewChunks, humanBytes(d.NewBytes))
			fmt.Fprintf(g.stdout, "  reused:  %8d chunks  %s\n", d.ReusedChunks, humanBytes(d.ReusedBytes))
			fmt.Fprintf(g.stdout, "  zero:              %s\n", humanBytes(d.ZeroBytes))
			fmt.Fprintf(g.stdout, "  changed in place:  %s\n", humanBytes(d.ChangedBytes))
			return nil
		},
	}
}
