package s3versions_test

import (
	"context"
	"errors"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/repo/s3versions"
)

// A receiver's commit of a version whose chunks it has stored (or found
// in the store): read the head, decide, commit; on a conflict decide
// again from the new head; on missing chunks, get them again.
func Example() {
	ctx := context.Background()
	store, err := s3store.Open(ctx, s3store.Config{URL: "s3://bucket/repo", CacheDir: "/var/cache/ntc"})
	if err != nil {
		return
	}
	defer store.Close()
	sets := s3versions.New(store)
	v := s3versions.Version{ /* digest, parent, record, indexes, meta from the push */ }
	for {
		h, err := sets.Head(ctx, "vm1")
		if err != nil {
			return
		}
		cur, ok := h.CurrentEntry()
		fastForward := !ok || cur.Digest == v.Parent // the repository's rule
		_, err = sets.Commit(ctx, h, v, s3versions.CommitOptions{MakeCurrent: fastForward})
		var missing *s3store.MissingError
		switch {
		case err == nil, errors.Is(err, s3versions.ErrExists):
			return
		case errors.Is(err, s3store.ErrConflict):
			continue // another receiver moved the head: decide again
		case errors.As(err, &missing):
			storeAgain(ctx, store, missing.IDs) // ask the sender for them, Put them
		default:
			return
		}
	}
}

func storeAgain(context.Context, *s3store.Store, []chunk.ID) {}
