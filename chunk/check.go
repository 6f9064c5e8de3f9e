package chunk

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// CheckOptions say how thoroughly Check looks.
type CheckOptions struct {
	// ReadData reads every referenced chunk and verifies its content
	// against its ID (Store.Get does), instead of only asking whether the
	// store holds it.
	ReadData bool
	// Fraction, with ReadData, reads only about this fraction of the
	// chunks (0 or 1: all): those whose ID's first byte falls below it, so
	// that repeated checks with the same fraction read the same chunks, and
	// checks with a growing fraction cover more.
	Fraction float64
}

// Owner is something whose images are indexes over a store: a version of
// a set, a checkpoint. Err is set when it could not be read (a truncated
// index): it is damaged whatever the store holds.
type Owner struct {
	Name    string
	Indexes []*Index
	Err     error
}

// CheckReport is what Check found.
type CheckReport struct {
	Owners  int `json:"owners"`
	Chunks  int `json:"chunks"`  // distinct chunks referenced
	Checked int `json:"checked"` // chunks looked at (all, or a fraction with ReadData)
	Read    int `json:"read"`    // chunks whose content was read and verified
	// Missing and Damaged are the chunks the store lacks, or holds with
	// content that does not match their ID.
	Missing []ID `json:"missing,omitempty"`
	Damaged []ID `json:"damaged,omitempty"`
	// Broken names the owners that cannot be restored as they are: those
	// that could not be read, or refer to a missing or damaged chunk, each
	// with why.
	Broken map[string]string `json:"broken,omitempty"`
}

// OK reports whether nothing was found wrong.
func (r *CheckReport) OK() bool { return len(r.Broken) == 0 }

// Check verifies that every chunk the owners' indexes refer to is in the
// store (and, with ReadData, that its content matches its ID), and says
// which owners are damaged. Errors other than a missing or damaged chunk
// (the store cannot be read at all, ctx ended) end it.
func Check(ctx context.Context, st Store, owners []Owner, opt CheckOptions) (*CheckReport, error) {
	rep := &CheckReport{Owners: len(owners), Broken: map[string]string{}}
	users := map[ID][]int{} // chunk → owners using it
	var order []ID
	for i, o := range owners {
		if o.Err != nil {
			rep.Broken[o.Name] = o.Err.Error()
			continue
		}
		for _, x := range o.Indexes {
			for _, e := range x.Entries {
				if e.Zero {
					continue
				}
				u := users[e.ID]
				if len(u) == 0 {
					order = append(order, e.ID)
				}
				if len(u) == 0 || u[len(u)-1] != i {
					users[e.ID] = append(u, i)
				}
			}
		}
	}
	rep.Chunks = len(order)
	limit := 256
	if opt.ReadData && opt.Fraction > 0 && opt.Fraction < 1 {
		limit = int(opt.Fraction * 256)
	}
	for _, id := range order {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		var err error
		if opt.ReadData {
			if int(id[0]) >= limit {
				// Not in this fraction: still check that it is there.
				_, err = presence(ctx, st, id)
			} else {
				rep.Read++
				_, err = st.Get(ctx, id)
			}
		} else {
			_, err = presence(ctx, st, id)
		}
		rep.Checked++
		var why string
		switch {
		case err == nil:
			continue
		case errors.Is(err, ErrChunkMissing):
			rep.Missing = append(rep.Missing, id)
			why = fmt.Sprintf("chunk %s is missing", id.Short())
		case errors.As(err, new(*InvalidChunkError)):
			rep.Damaged = append(rep.Damaged, id)
			why = fmt.Sprintf("chunk %s is damaged", id.Short())
		default:
			return rep, fmt.Errorf("check chunk %s: %w", id.Short(), err)
		}
		for _, i := range users[id] {
			if _, ok := rep.Broken[owners[i].Name]; !ok {
				rep.Broken[owners[i].Name] = why
			}
		}
	}
	if len(rep.Broken) == 0 {
		rep.Broken = nil
	}
	return rep, nil
}

// presence is Has as an error: ErrChunkMissing when the store lacks id.
func presence(ctx context.Context, st Store, id ID) (bool, error) {
	ok, err := st.Has(ctx, id)
	if err == nil && !ok {
		err = ErrChunkMissing
	}
	return ok, err
}

// BrokenNames returns the report's broken owners, sorted.
func (r *CheckReport) BrokenNames() []string {
	var out []string
	for n := range r.Broken {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
