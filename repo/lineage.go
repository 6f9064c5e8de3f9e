package repo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/ntc-project/ntc/internal/atomicfile"
)

// The lineage log holds one link a line: the version's digest and its
// parent's, in hex, separated by a space. It is appended to; a torn last
// line (a crash) is ignored. Once it grows past maxLineageFile it is
// rewritten with the links within maxDepth of the versions the set holds.
const (
	maxLineageFile = 4 << 20
	// maxDepth bounds how far back ancestry is followed (and kept): about
	// 14 hours of versions every 5 seconds.
	maxDepth = 10000
)

// links reads the set's lineage: parent by digest.
func (r *Repo) links(set string) (map[Digest]Digest, error) {
	b, err := os.ReadFile(filepath.Join(r.setDir(set), lineageFile))
	if errors.Is(err, fs.ErrNotExist) {
		return map[Digest]Digest{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the lineage of %s: %w", set, err)
	}
	return parseLinks(b), nil
}

// parseLinks decodes a lineage log, skipping lines that do not parse.
func parseLinks(b []byte) map[Digest]Digest {
	out := map[Digest]Digest{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 256), 256)
	for sc.Scan() {
		l, ok := parseLink(sc.Bytes())
		if ok {
			out[l.Digest] = l.Parent
		}
	}
	return out
}

func parseLink(line []byte) (Link, bool) {
	var l Link
	a, b, ok := bytes.Cut(line, []byte(" "))
	if !ok || l.Digest.UnmarshalText(a) != nil || l.Parent.UnmarshalText(b) != nil || l.Digest.IsZero() {
		return Link{}, false
	}
	return l, true
}

func appendLink(b []byte, l Link) []byte {
	b = append(b, l.Digest.String()...)
	b = append(b, ' ')
	b = append(b, l.Parent.String()...)
	return append(b, '\n')
}

// addLinks records links the set's lineage lacks. Called with the lock.
func (r *Repo) addLinks(set string, add []Link) error {
	have, err := r.links(set)
	if err != nil {
		return err
	}
	var b []byte
	for _, l := range add {
		if l.Digest.IsZero() {
			continue
		}
		if p, ok := have[l.Digest]; ok && p == l.Parent {
			continue
		}
		have[l.Digest] = l.Parent
		b = appendLink(b, l)
	}
	if len(b) == 0 {
		return nil
	}
	if err := os.MkdirAll(r.setDir(set), dirMode); err != nil {
		return fmt.Errorf("lineage of %s: %w", set, err)
	}
	p := filepath.Join(r.setDir(set), lineageFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("lineage of %s: %w", set, err)
	}
	// A torn line left by a crash would glue onto the next one: start on a
	// line of its own.
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
			b = append([]byte{'\n'}, b...)
		}
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lineage of %s: %w", set, err)
	}
	if fi, err := os.Stat(p); err == nil && fi.Size() > maxLineageFile {
		return r.trimLinks(set, have)
	}
	return nil
}

// trimLinks rewrites the lineage with the links within maxDepth of the
// versions the set holds.
func (r *Repo) trimLinks(set string, have map[Digest]Digest) error {
	vs, err := r.Versions(set)
	if err != nil {
		return err
	}
	keep := map[Digest]bool{}
	for _, v := range vs {
		d := v.Digest
		for i := 0; i < maxDepth && !d.IsZero() && !keep[d]; i++ {
			keep[d] = true
			d = have[d]
		}
	}
	var b []byte
	for d := range keep {
		if p, ok := have[d]; ok {
			b = appendLink(b, Link{Digest: d, Parent: p})
		}
	}
	return atomicfile.WriteBytes(filepath.Join(r.setDir(set), lineageFile), fileMode, b)
}

// isAncestor reports whether anc is desc or one of its ancestors, as far
// as the set's lineage knows.
func (r *Repo) isAncestor(set string, anc, desc Digest) (bool, error) {
	links, err := r.links(set)
	if err != nil {
		return false, err
	}
	return ancestorIn(links, anc, desc), nil
}

func ancestorIn(links map[Digest]Digest, anc, desc Digest) bool {
	d := desc
	for i := 0; i <= maxDepth && !d.IsZero(); i++ {
		if d == anc {
			return true
		}
		p, ok := links[d]
		if !ok {
			return false
		}
		d = p
	}
	return false
}

// Ancestry returns the links from version d back through its ancestors, at
// most n of them, newest first: what a receiver needs to know that its head
// is an ancestor of d.
func (r *Repo) Ancestry(set string, d Digest, n int) ([]Link, error) {
	links, err := r.links(set)
	if err != nil {
		return nil, err
	}
	var out []Link
	for len(out) < n && !d.IsZero() {
		p, ok := links[d]
		if !ok {
			break
		}
		out = append(out, Link{Digest: d, Parent: p})
		d = p
	}
	return out, nil
}

// Newest returns, among the digests offered (a peer's versions of the set),
// the version this repository holds that was committed here last, or nil:
// the common base a push can be a delta against.
func (r *Repo) Newest(set string, offered []Digest) (*Version, error) {
	vs, err := r.Versions(set)
	if err != nil {
		return nil, err
	}
	for _, v := range slices.Backward(vs) {
		if slices.Contains(offered, v.Digest) {
			return v, nil
		}
	}
	return nil, nil
}

// Diverged returns the set's versions that are neither the head, nor its
// ancestors, nor ancestors of another such version: the tips of copies that
// ran on apart from the head. Empty when the set has one line of versions.
func (r *Repo) Diverged(set string) ([]*Version, error) {
	head, err := r.Head(set)
	if err != nil || head == nil {
		return nil, err
	}
	vs, err := r.Versions(set)
	if err != nil {
		return nil, err
	}
	links, err := r.links(set)
	if err != nil {
		return nil, err
	}
	var tips []*Version
	for _, v := range vs {
		if v.Digest == head.Digest || ancestorIn(links, v.Digest, head.Digest) || ancestorIn(links, head.Digest, v.Digest) {
			continue
		}
		tip := true
		for _, w := range vs {
			if w.Digest != v.Digest && ancestorIn(links, v.Digest, w.Digest) {
				tip = false
				break
			}
		}
		if tip {
			tips = append(tips, v)
		}
	}
	return tips, nil
}
