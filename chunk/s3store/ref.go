package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Refs are small named objects under PREFIX/refs/ that are only ever
// created if absent (If-None-Match: *) or replaced if unchanged since read
// (If-Match: the ETag read): compare-and-swap on the object store itself,
// so that several writers sharing a bucket agree on, say, the latest
// version of a set without a lock service. A write that loses the race
// gets ErrConflict and nothing of it is visible.
type Refs struct {
	b     *bucket
	dir   string // "refs/", or "gc/" for the store's own
	limit int    // bytes of content; 0 is maxRefLen
}

func (r *Refs) maxLen() int {
	if r.limit > 0 {
		return r.limit
	}
	return maxRefLen
}

// Ref is a ref's content and the ETag it had when read or written.
type Ref struct {
	Data []byte
	ETag string
}

// maxRefLen bounds a ref's content.
const maxRefLen = 1 << 20

// ErrUnknownOutcome reports a conditional write whose answer was lost (a
// timeout, a dropped connection): it may or may not have happened. Read
// the ref to find out.
var ErrUnknownOutcome = errors.New("outcome of the write unknown")

// List calls fn with the name of every ref whose name starts with dir
// (say "sets/"), in lexical order.
func (r *Refs) List(ctx context.Context, dir string, fn func(name string) error) error {
	return r.b.list(ctx, r.dir+dir, func(o object) error {
		name := dir + o.name
		if checkRefName(name) != nil {
			return nil // not written through Refs
		}
		return fn(name)
	})
}

// checkRefName allows names of segments of letters, digits and . _ - +,
// not starting with '.', separated by "/", at most 256 bytes: nothing
// that could climb out of refs/.
func checkRefName(name string) error {
	if name == "" || len(name) > 256 {
		return fmt.Errorf("ref name %q: want 1 to 256 characters", name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg[0] == '.' {
			return fmt.Errorf("ref name %q: empty part, or one starting with '.'", name)
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' && c != '+' {
				return fmt.Errorf("ref name %q: only letters, digits, . _ - + and /", name)
			}
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (r *Refs) key(name string) string { return r.dir + name }

// Read returns a ref's content and ETag; a ref that does not exist is
// ErrNotFound.
func (r *Refs) Read(ctx context.Context, name string) (Ref, error) {
	if err := checkRefName(name); err != nil {
		return Ref{}, err
	}
	data, etag, err := r.b.get(ctx, r.key(name), int64(r.maxLen()))
	if err != nil {
		return Ref{}, fmt.Errorf("read ref: %w", err)
	}
	return Ref{Data: data, ETag: etag}, nil
}

// Create creates a ref that does not exist yet; one that does is
// ErrConflict. A lost answer is ErrUnknownOutcome.
func (r *Refs) Create(ctx context.Context, name string, data []byte) (Ref, error) {
	if err := checkRefName(name); err != nil {
		return Ref{}, err
	}
	if len(data) > r.maxLen() {
		return Ref{}, fmt.Errorf("create ref %s: %d bytes is over the %d limit", name, len(data), r.maxLen())
	}
	etag, err := r.b.create(ctx, r.key(name), data, noRetry)
	if err != nil {
		return Ref{}, fmt.Errorf("create ref: %w", outcome(ctx, err))
	}
	return Ref{Data: data, ETag: etag}, nil
}

// Swap replaces a ref with data if it is still as old was read; if
// another writer replaced or removed it since, it is ErrConflict (or
// ErrNotFound) and the ref keeps the other writer's content. A lost
// answer is ErrUnknownOutcome.
func (r *Refs) Swap(ctx context.Context, name string, old Ref, data []byte) (Ref, error) {
	if err := checkRefName(name); err != nil {
		return Ref{}, err
	}
	if len(data) > r.maxLen() {
		return Ref{}, fmt.Errorf("replace ref %s: %d bytes is over the %d limit", name, len(data), r.maxLen())
	}
	if old.ETag == "" {
		return Ref{}, fmt.Errorf("replace ref %s: no ETag to compare with", name)
	}
	etag, err := r.b.swap(ctx, r.key(name), old.ETag, data, noRetry)
	if err != nil {
		return Ref{}, fmt.Errorf("replace ref: %w", outcome(ctx, err))
	}
	return Ref{Data: data, ETag: etag}, nil
}

// outcome marks a write error that leaves the write's outcome unknown.
func outcome(ctx context.Context, err error) error {
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoBucket) || ctx.Err() != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
}

// maxUpdateAttempts bounds Update's rounds under contention.
const maxUpdateAttempts = 32

// Update reads a ref, computes its next content with next (given the
// current content, nil and false if the ref does not exist yet), and
// writes it if nobody wrote in between; if somebody did, it starts again
// from what they wrote, after a short random wait. It returns what it
// wrote. An error from next ends it with nothing written.
//
// When the answer to a write is lost, Update reads the ref back and
// counts the write as done if the ref holds exactly what it wrote: so the
// content next returns must be unique to this writer (name the writer or
// carry a nonce), or another writer's identical write would be taken for
// this one.
func (r *Refs) Update(ctx context.Context, name string, next func(cur []byte, exists bool) ([]byte, error)) (Ref, error) {
	wait := 2 * time.Millisecond
	for range maxUpdateAttempts {
		cur, err := r.Read(ctx, name)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Ref{}, fmt.Errorf("update ref %s: %w", name, err)
		}
		data, err := next(cur.Data, exists)
		if err != nil {
			return Ref{}, fmt.Errorf("update ref %s: %w", name, err)
		}
		var w Ref
		if exists {
			w, err = r.Swap(ctx, name, cur, data)
		} else {
			w, err = r.Create(ctx, name, data)
		}
		switch {
		case err == nil:
			return w, nil
		case errors.Is(err, ErrUnknownOutcome):
			if again, rerr := r.Read(ctx, name); rerr == nil && bytes.Equal(again.Data, data) {
				return again, nil
			}
		case !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotFound):
			return Ref{}, fmt.Errorf("update ref %s: %w", name, err)
		}
		// Someone else wrote first: back off a random while, then go
		// again from what they wrote.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(wait))))
		select {
		case <-ctx.Done():
			t.Stop()
			return Ref{}, fmt.Errorf("update ref %s: %w", name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
	return Ref{}, fmt.Errorf("update ref %s: %w %d times in a row: too many writers on one ref", name, ErrConflict, maxUpdateAttempts)
}
