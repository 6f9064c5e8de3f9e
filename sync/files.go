package sync

import (
	"github.com/ntc-project/ntc/internal/safefile"
)

// Sizes over which the files only this package reads (the older layout's,
// the images' state) are refused before they are read; package repo
// bounds the node repository's own.
const (
	maxCurrentFile  = 64
	maxStateFile    = 4 << 10
	maxManifestFile = 4 << 20
)

// readFile reads the repository's file at rel (slash-separated): inside
// the repository, never through a symbolic link, a regular file of at
// most limit bytes (internal/safefile).
func (r *Repo) readFile(rel string, limit int64) ([]byte, error) {
	return safefile.ReadIn(r.dir, rel, limit)
}
