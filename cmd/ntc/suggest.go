package main

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// suggestDistance is how many edits apart a typo may be from what it
// suggests (cobra's default for commands).
const suggestDistance = 2

// closest returns the candidates within suggestDistance edits of typed, or
// that start with it, nearest first.
func closest(typed string, candidates []string) []string {
	type scored struct {
		s string
		d int
	}
	var near []scored
	for _, c := range candidates {
		d := levenshtein(strings.ToLower(typed), strings.ToLower(c))
		if d <= suggestDistance || (len(typed) >= 2 && strings.HasPrefix(c, typed)) {
			near = append(near, scored{c, d})
		}
	}
	slices.SortStableFunc(near, func(a, b scored) int { return cmp.Compare(a.d, b.d) })
	out := make([]string, len(near))
	for i, n := range near {
		out[i] = n.s
	}
	return out
}

// levenshtein is the number of single-character insertions, deletions and
// substitutions that turn a into b.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			sub := prev[j-1]
			if ra[i-1] != rb[j-1] {
				sub++
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, sub)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// didYouMean formats suggestions as cobra does for commands.
func didYouMean(prefix string, s []string) string {
	if len(s) == 0 {
		return ""
	}
	return "\n\nDid you mean this?\n\t" + prefix + strings.Join(s, "\n\t"+prefix)
}

// flagError makes a mistake in the flags a usage error and, for an unknown
// long flag, suggests the command's flags closest to it. Flags that reach
// ntc itself after a mistyped command ('ntc replicat --every 5s') are the
// command's: the mistake is the command.
func flagError(cmd *cobra.Command, err error) error {
	if !cmd.HasParent() {
		if cerr := unknownCommand(cmd, cmd.Flags().Args()); cerr != nil {
			return cerr
		}
	}
	if ne, ok := errors.AsType[*pflag.NotExistError](err); ok && ne.GetSpecifiedShortnames() == "" {
		var names []string
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && f.Deprecated == "" {
				names = append(names, f.Name)
			}
		})
		err = fmt.Errorf("%w%s", err, didYouMean("--", closest(ne.GetSpecifiedName(), names)))
	}
	return usageError{err}
}

// unknownCommand refuses arguments to the root command: they are mistyped
// subcommands. It suggests the closest ones.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return usagef("unknown command %q%s", args[0], didYouMean("", cmd.SuggestionsFor(args[0])))
}
