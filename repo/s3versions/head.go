package s3versions

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
)

// Head is a set's head as read from the bucket: its committed versions,
// oldest first, and which one is current. Commits, SetCurrent and Remove
// start from one, and fail with s3store.ErrConflict if the head changed
// since it was read.
type Head struct {
	Set      string
	Versions []Entry
	// Current is the Seq of the current version; 0 for none.
	Current uint64
	// Next is the Seq the next version committed gets.
	Next uint64

	barrier string // the last collection's barrier mark
	etag    string // "" when the head does not exist yet
}

// Entry is one committed version as a head lists it.
type Entry struct {
	Seq    uint64
	Digest chunk.ID
	Parent chunk.ID // zero for a first version
	// Images are the names of its indexes, in the order committed.
	Images []string
	// Meta says whether it has metadata.
	Meta bool

	key string // its objects: blobs/sets/SET/v/KEY/...
}

// Exists reports whether the set has a head in the bucket.
func (h *Head) Exists() bool { return h.etag != "" }

// ByDigest returns the entry of the version with digest d, or false.
func (h *Head) ByDigest(d chunk.ID) (Entry, bool) {
	for _, e := range h.Versions {
		if e.Digest == d {
			return e, true
		}
	}
	return Entry{}, false
}

// BySeq returns the entry numbered seq, or false.
func (h *Head) BySeq(seq uint64) (Entry, bool) {
	for _, e := range h.Versions {
		if e.Seq == seq {
			return e, true
		}
	}
	return Entry{}, false
}

// CurrentEntry returns the current version's entry, or false.
func (h *Head) CurrentEntry() (Entry, bool) {
	if h.Current == 0 {
		return Entry{}, false
	}
	return h.BySeq(h.Current)
}

// headJSON is the head object's encoding.
type headJSON struct {
	Format   int         `json:"format"`
	Set      string      `json:"set"`
	Versions []entryJSON `json:"versions"`
	Current  uint64      `json:"current"`
	Next     uint64      `json:"next"`
	Barrier  string      `json:"barrier,omitempty"`
	// Write is unique to each write of the head, so that a writer whose
	// answer was lost can tell its write from another's.
	Write string `json:"write"`
}

type entryJSON struct {
	Seq    uint64   `json:"seq"`
	Digest string   `json:"digest"`
	Parent string   `json:"parent,omitempty"`
	Images []string `json:"images"`
	Meta   bool     `json:"meta,omitempty"`
	Key    string   `json:"key"`
}

const headFormat = 1

// Limits on a head: its object is at most 1 MiB (s3store's refs).
const (
	maxVersions = 2048
	maxImages   = 256
)

// ErrBadHead reports a head object that is not one this package wrote.
var ErrBadHead = errors.New("damaged set head")

func (h *Head) encode() ([]byte, string) {
	var nonce [8]byte
	rand.Read(nonce[:])
	j := headJSON{Format: headFormat, Set: h.Set, Current: h.Current, Next: h.Next, Barrier: h.barrier,
		Write: hex.EncodeToString(nonce[:]), Versions: make([]entryJSON, len(h.Versions))}
	for i, e := range h.Versions {
		j.Versions[i] = entryJSON{Seq: e.Seq, Digest: e.Digest.String(), Images: e.Images, Meta: e.Meta, Key: e.key}
		if e.Parent != (chunk.ID{}) {
			j.Versions[i].Parent = e.Parent.String()
		}
	}
	b, err := json.Marshal(j)
	if err != nil {
		panic(err) // strings and numbers
	}
	return b, j.Write
}

// decodeHead reads a head object of set: every name in it is one
// repo.CheckName accepts, numbers increase, digests are unique.
func decodeHead(set string, b []byte) (*Head, error) {
	var j headJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadHead, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w of %s: %s", ErrBadHead, set, fmt.Sprintf(format, a...))
	}
	if j.Format != headFormat {
		return nil, bad("format %d (this ntc reads %d)", j.Format, headFormat)
	}
	if j.Set != set {
		return nil, bad("it names set %.140q", j.Set)
	}
	if len(j.Versions) > maxVersions {
		return nil, bad("%d versions", len(j.Versions))
	}
	h := &Head{Set: set, Current: j.Current, Next: j.Next, barrier: j.Barrier}
	seen := map[chunk.ID]bool{}
	for _, v := range j.Versions {
		e := Entry{Seq: v.Seq, Meta: v.Meta, key: v.Key, Images: v.Images}
		var err error
		if e.Digest, err = chunk.ParseID(v.Digest); err != nil {
			return nil, bad("%v", err)
		}
		if v.Parent != "" {
			if e.Parent, err = chunk.ParseID(v.Parent); err != nil {
				return nil, bad("%v", err)
			}
		}
		if seen[e.Digest] {
			return nil, bad("version %s twice", e.Digest.Short())
		}
		seen[e.Digest] = true
		if e.Seq == 0 || e.Seq >= h.Next || len(h.Versions) > 0 && e.Seq <= h.Versions[len(h.Versions)-1].Seq {
			return nil, bad("version number %d out of order", e.Seq)
		}
		if err := checkKey(e.key); err != nil {
			return nil, bad("%v", err)
		}
		if err := checkImages(e.Images); err != nil {
			return nil, bad("%v", err)
		}
		h.Versions = append(h.Versions, e)
	}
	if _, ok := h.CurrentEntry(); h.Current != 0 && !ok {
		return nil, bad("current version %d is not listed", h.Current)
	}
	return h, nil
}

// checkKey accepts what newKey makes: a digest, a dot, 16 hex digits.
func checkKey(k string) error {
	d, nonce, ok := cutLast(k, '.')
	if _, err := chunk.ParseID(d); !ok || err != nil || len(nonce) != 16 {
		return fmt.Errorf("object key %.100q", k)
	}
	if _, err := hex.DecodeString(nonce); err != nil {
		return fmt.Errorf("object key %.100q", k)
	}
	return nil
}

func cutLast(s string, sep byte) (before, after string, found bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func newKey(d chunk.ID) string {
	var nonce [8]byte
	rand.Read(nonce[:])
	return d.String() + "." + hex.EncodeToString(nonce[:])
}

func checkImages(names []string) error {
	if len(names) == 0 || len(names) > maxImages {
		return fmt.Errorf("%d images, want 1 to %d", len(names), maxImages)
	}
	for i, n := range names {
		if err := repo.CheckName(n); err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("image %s twice", n)
		}
	}
	return nil
}

// clone returns a copy of h whose slices may be changed.
func (h *Head) clone() *Head {
	c := *h
	c.Versions = slices.Clone(h.Versions)
	return &c
}
