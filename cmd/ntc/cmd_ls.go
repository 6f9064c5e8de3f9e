package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/repo"
	ntcsync "github.com/ntc-project/ntc/sync"
)

func newLsCommand(g *globals) *cobra.Command {
	var store string
	cmd := &cobra.Command{
		Use:   "ls --store DIR|s3://BUCKET/PREFIX",
		Short: "List the sets and versions a repository holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			store = g.v.GetString("serve.store")
			if store == "" {
				return usagef("ls needs --store DIR")
			}
			repo, s3r, err := g.openReadRepo(cmd.Context(), store)
			if err != nil {
				return err
			}
			if s3r != nil {
				defer s3r.Close()
			}
			sets, err := repo.List()
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, lsJSONOf(repo, sets))
			}
			if len(sets) == 0 {
				fmt.Fprintf(g.stdout, "%s holds nothing yet\n", store)
			}
			if s3r != nil {
				fmt.Fprintf(g.stdout, "chunk store: %d chunks in %d packs\n", s3r.store.Len(), s3r.store.Packs())
			} else if chunks, bytes, err := storeUsage(store); err == nil && chunks > 0 {
				fmt.Fprintf(g.stdout, "chunk store: %d chunks, %s in pack files\n", chunks, humanBytes(bytes))
			}
			for _, s := range sets {
				fmt.Fprintf(g.stdout, "%s: %s\n", s.Set, plural(len(s.Versions), "version"))
				if m := s.Current; m != nil {
					from := "taken here"
					if m.Sender != "" {
						from = "received from " + m.Sender
					}
					fmt.Fprintf(g.stdout, "  current v%d %s, made %s, %s\n", m.Version, m.Digest.Short(), m.Created.Local().Format(time.DateTime), from)
					for _, im := range m.Images {
						path := imagePathOf(repo, s.Set, m.Version, im.Name)
						fmt.Fprintf(g.stdout, "    %-24s %10s  %s\n", im.Name, humanBytes(im.Size), path)
					}
				}
				// A repository on S3 records no runner (Nodes is nil).
				if rn, err := runnerOf(repo, s.Set); err == nil && rn != nil && rn.Node != "" {
					fmt.Fprintf(g.stdout, "  runs at %s (since %s, from %s)\n", rn.Node, rn.Since.Local().Format(time.DateTime), rn.Version.Short())
				}
				for _, d := range s.Diverged {
					fmt.Fprintf(g.stdout, "  v%d diverged from the current version (stored, not current: 'ntc push --force' from its sender makes it current)\n", d)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&store, "store", "", "repository directory, or s3://BUCKET/PREFIX")
	g.bind(cmd, "serve.store", "store")
	addS3EndpointFlag(g, cmd)
	return cmd
}

// lsJSON is what 'ntc ls --json' prints for a set: the repository's own
// description, with digests in hex and each current image's path.
type lsJSON struct {
	ntcsync.SetInfo
	Current *lsVersionJSON `json:"current,omitempty"`
}

type lsVersionJSON struct {
	ntcsync.Manifest
	Images []lsImageJSON `json:"images"`
}

type lsImageJSON struct {
	ntcsync.ImageManifest
	Digest string `json:"digest"` // hex, not chunk.ID's array of bytes
	Path   string `json:"path"`
}

// imagePathOf is the file that holds image of version v of set, or ""
// when its images are in the store only: a checkpoint taken here, or a
// repository whose images are written on demand ('ntc resume' writes
// them) and hold another version.
func imagePathOf(repo *ntcsync.Repo, set string, v uint64, image string) string {
	if !repo.ImagesHold(set, v) {
		return ""
	}
	return repo.ImagePath(set, image)
}

func lsJSONOf(repo *ntcsync.Repo, sets []ntcsync.SetInfo) []lsJSON {
	out := make([]lsJSON, 0, len(sets))
	for _, s := range sets {
		j := lsJSON{SetInfo: s}
		if j.Versions == nil {
			j.Versions = []uint64{}
		}
		if m := s.Current; m != nil {
			j.Current = &lsVersionJSON{Manifest: *m, Images: []lsImageJSON{}}
			for _, im := range m.Images {
				j.Current.Images = append(j.Current.Images, lsImageJSON{ImageManifest: im, Digest: im.Digest.String(), Path: imagePathOf(repo, s.Set, m.Version, im.Name)})
			}
		}
		out = append(out, j)
	}
	return out
}

// storeUsage counts the chunks of the repository's store and the bytes of
// its pack files (a reader beside a running serve).
func storeUsage(dir string) (chunks int, bytes int64, err error) {
	st, err := chunk.OpenPackStoreReadOnly(dir)
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	packs, err := filepath.Glob(filepath.Join(dir, "packs", "pack-*.dat"))
	if err != nil {
		return 0, 0, err
	}
	for _, p := range packs {
		if fi, err := os.Stat(p); err == nil {
			bytes += fi.Size()
		}
	}
	return st.Len(), bytes, nil
}

// runnerOf returns who runs set as the repository records it: nil for a
// repository on S3, which records no runner.
func runnerOf(r *ntcsync.Repo, set string) (*repo.Runner, error) {
	if r.Nodes() == nil {
		return nil, nil
	}
	return r.Nodes().Runner(set)
}
