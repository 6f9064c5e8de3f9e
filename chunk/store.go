package chunk

import (
	"context"
	"errors"
	"fmt"
)

// Store holds chunks by ID. Implementations must be safe for concurrent use
// and must never return content that does not match the ID asked for.
// Every implementation passes the suite in chunk/storetest.
type Store interface {
	// Has reports whether the store holds the chunk.
	Has(ctx context.Context, id ID) (bool, error)
	// Get returns the chunk's content, verified against id. A chunk that is
	// not held is ErrChunkMissing; one whose content does not match is an
	// *InvalidChunkError.
	Get(ctx context.Context, id ID) ([]byte, error)
	// Put stores data as chunk id. It refuses data that does not match id
	// with an *InvalidChunkError. Storing a chunk already held is a no-op.
	Put(ctx context.Context, id ID, data []byte) error
}

// ErrChunkMissing reports a chunk the store does not hold.
var ErrChunkMissing = errors.New("chunk not in store")

// InvalidChunkError reports content that does not match its chunk ID.
type InvalidChunkError struct {
	ID  ID // what the chunk was asked or offered as
	Sum ID // what its content hashes to
	// Where says where the bad content was found (a file, a peer).
	Where string
}

func (e *InvalidChunkError) Error() string {
	return fmt.Sprintf("chunk %s is damaged: content hashes to %s (%s)", e.ID.Short(), e.Sum.Short(), e.Where)
}

// Verify returns an *InvalidChunkError when data does not hash to id.
func Verify(id ID, data []byte, where string) error {
	if sum := Sum(data); sum != id {
		return &InvalidChunkError{ID: id, Sum: sum, Where: where}
	}
	return nil
}

// WriteStore is a Store that a receiver writes into: chunks it has just
// verified go in without a second hash, and Sync makes what was put
// durable. A push commits a version only after Sync. A local pack store
// (PackStore) and a bucket (chunk/s3store) are WriteStores.
type WriteStore interface {
	Store
	// PutVerified is Put for a chunk the caller has verified against id;
	// zstd, if not nil, is data compressed with zstd, and raw says data is
	// known not to compress.
	PutVerified(ctx context.Context, id ID, data, zstd []byte, raw bool) error
	// Sync returns once every chunk put so far is durable, or the error
	// that kept one from being stored.
	Sync(ctx context.Context) error
}

var _ WriteStore = (*PackStore)(nil)
