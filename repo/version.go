package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/zeebo/blake3"

	"github.com/ntc-project/ntc/chunk"
)

// Version is one committed version of a set (see the package doc).
type Version struct {
	Set string `json:"set"`
	// Seq is the version's number in this repository (1, 2, ...): the order
	// versions were committed here. It is not the same on another node.
	Seq     uint64    `json:"seq"`
	Digest  Digest    `json:"digest"`
	Parent  Digest    `json:"parent"`
	Node    string    `json:"node"` // the node that made it (a transport ID, or a name)
	Created time.Time `json:"created"`
	Images  []Image   `json:"images"`
	Meta    Digest    `json:"meta"` // BLAKE3 of the metadata; zero when there is none
	// From is the peer this version arrived from; empty when it was made
	// here. Local: not part of the digest.
	From string `json:"from,omitempty"`
}

// Image is one image of a version.
type Image struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Index  Digest `json:"index"` // BLAKE3 of the index's encoding
	Chunks int    `json:"chunks"`
}

// Digest is a BLAKE3-256 digest, written in hex in JSON.
type Digest chunk.ID

// IsZero reports whether d is the zero digest (no parent, no metadata).
func (d Digest) IsZero() bool { return d == Digest{} }

func (d Digest) String() string { return chunk.ID(d).String() }

// Short is the first 12 hex digits, for people.
func (d Digest) Short() string { return chunk.ID(d).Short() }

// MarshalText writes the digest in hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a digest in hex.
func (d *Digest) UnmarshalText(b []byte) error {
	id, err := chunk.ParseID(string(b))
	if err != nil {
		return fmt.Errorf("digest %.80q: %w", b, err)
	}
	*d = Digest(id)
	return nil
}

// IndexDigest returns the digest of x's encoding and the encoding.
func IndexDigest(x *chunk.Index) (Digest, []byte, error) {
	b, err := x.MarshalBinary()
	if err != nil {
		return Digest{}, nil, fmt.Errorf("encode index: %w", err)
	}
	return Digest(blake3.Sum256(b)), b, nil
}

// metaDigest is the digest of a version's metadata, zero for none.
func metaDigest(meta []byte) Digest {
	if len(meta) == 0 {
		return Digest{}
	}
	return Digest(blake3.Sum256(meta))
}

// ErrBadVersion reports a version that is malformed or whose digest does not
// match its content.
var ErrBadVersion = errors.New("bad version")

// Seal fills in the images' index digests and chunk counts from idx (one
// index per image, in order), the metadata's digest, and the version's
// Digest. Images must have their names set; sizes are taken from idx.
func (v *Version) Seal(idx []*chunk.Index, meta []byte) error {
	if len(idx) != len(v.Images) {
		return fmt.Errorf("seal version: %d indexes for %d images: %w", len(idx), len(v.Images), ErrBadVersion)
	}
	for i, x := range idx {
		d, _, err := IndexDigest(x)
		if err != nil {
			return err
		}
		v.Images[i].Index, v.Images[i].Size, v.Images[i].Chunks = d, x.Size, len(x.Entries)
	}
	v.Meta = metaDigest(meta)
	if err := v.check(); err != nil {
		return err
	}
	v.Digest = v.compute()
	return nil
}

// Verify checks that v is well formed and that its digest is its content's.
func (v *Version) Verify() error {
	if err := v.check(); err != nil {
		return err
	}
	if got := v.compute(); got != v.Digest {
		return fmt.Errorf("version %s of %s: content digest is %s: %w", v.Digest.Short(), v.Set, got.Short(), ErrBadVersion)
	}
	return nil
}

// Limits on what a version may hold.
const (
	maxImages  = 4096
	maxNodeLen = 128
)

func (v *Version) check() error {
	if err := CheckName(v.Set); err != nil {
		return fmt.Errorf("version: set: %w", err)
	}
	if len(v.Images) == 0 || len(v.Images) > maxImages {
		return fmt.Errorf("version of %s: %d images, want 1 to %d: %w", v.Set, len(v.Images), maxImages, ErrBadVersion)
	}
	if len(v.Node) > maxNodeLen || strings.ContainsFunc(v.Node, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("version of %s: node %.40q: %w", v.Set, v.Node, ErrBadVersion)
	}
	seen := map[string]bool{}
	for _, im := range v.Images {
		if err := CheckName(im.Name); err != nil {
			return fmt.Errorf("version of %s: image: %w", v.Set, err)
		}
		if seen[im.Name] {
			return fmt.Errorf("version of %s: image %s twice: %w", v.Set, im.Name, ErrBadVersion)
		}
		seen[im.Name] = true
		if im.Size < 0 {
			return fmt.Errorf("version of %s: image %s has size %d: %w", v.Set, im.Name, im.Size, ErrBadVersion)
		}
	}
	return nil
}

// digestMagic starts the canonical encoding; a new encoding gets a new one.
const digestMagic = "ntc-version-1\x00"

// compute returns the digest of v's canonical encoding: the set, parent,
// node, creation instant (Unix nanoseconds), metadata digest, and the images
// in name order (name, size, index digest). Seq and From are local and left
// out.
func (v *Version) compute() Digest {
	h := blake3.New()
	var b []byte
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = append(b, digestMagic...)
	str(v.Set)
	b = append(b, v.Parent[:]...)
	str(v.Node)
	b = binary.BigEndian.AppendUint64(b, uint64(v.Created.UnixNano()))
	b = append(b, v.Meta[:]...)
	ims := slices.Clone(v.Images)
	slices.SortFunc(ims, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
	b = binary.AppendUvarint(b, uint64(len(ims)))
	for _, im := range ims {
		str(im.Name)
		b = binary.BigEndian.AppendUint64(b, uint64(im.Size))
		b = append(b, im.Index[:]...)
	}
	h.Write(b)
	var d Digest
	h.Sum(d[:0])
	return d
}

// Image returns the image named name, or false.
func (v *Version) Image(name string) (Image, bool) {
	for _, im := range v.Images {
		if im.Name == name {
			return im, true
		}
	}
	return Image{}, false
}

// MaxName is the longest set or image name.
const MaxName = 128

// ErrBadName reports a set or image name that could escape its directory or
// is otherwise unusable as a file name.
var ErrBadName = errors.New("bad name")

// CheckName accepts names of 1 to 128 letters, digits, '.', '_', '-' and
// '+', not starting with '.': no path separators, no "..".
func CheckName(s string) error {
	if s == "" || len(s) > MaxName {
		return fmt.Errorf("%w %.140q: want 1 to %d characters", ErrBadName, s, MaxName)
	}
	if s[0] == '.' {
		return fmt.Errorf("%w %q: must not start with '.'", ErrBadName, s)
	}
	for _, c := range s {
		if !nameByte(c) {
			return fmt.Errorf("%w %q: only letters, digits, '.', '_', '-' and '+' are allowed", ErrBadName, s)
		}
	}
	return nil
}

// SafeName turns s into a name CheckName accepts, for names that come
// from elsewhere (a file's, a QEMU device's): every byte but a letter,
// digit, '.', '_', '-' or '+' becomes '_', and so does a leading '.'; an
// empty s becomes "_", a longer one is cut to MaxName bytes. A name
// CheckName accepts stays as it is.
func SafeName(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s[:min(len(s), MaxName)])
	for i, c := range b {
		if !nameByte(c) || i == 0 && c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}

// nameByte reports whether c may stand in a name.
func nameByte[T byte | rune](c T) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+'
}

// Matches checks that v is well formed and that idx (one index per image,
// in the order of v.Images) and meta are the content its digest covers:
// what a commit, wherever it stores the version, checks first.
func (v *Version) Matches(idx []*chunk.Index, meta []byte) error {
	if err := v.Verify(); err != nil {
		return err
	}
	if len(idx) != len(v.Images) {
		return fmt.Errorf("commit %s: %d indexes for %d images: %w", v.Set, len(idx), len(v.Images), ErrBadVersion)
	}
	for i, x := range idx {
		d, _, err := IndexDigest(x)
		if err != nil {
			return err
		}
		if d != v.Images[i].Index {
			return fmt.Errorf("commit %s: image %s's index does not match the version: %w", v.Set, v.Images[i].Name, ErrBadVersion)
		}
	}
	if len(meta) > MaxMeta {
		return fmt.Errorf("commit %s: %d bytes of metadata, at most %d: %w", v.Set, len(meta), MaxMeta, ErrBadVersion)
	}
	if metaDigest(meta) != v.Meta {
		return fmt.Errorf("commit %s: metadata does not match the version: %w", v.Set, ErrBadVersion)
	}
	return nil
}
