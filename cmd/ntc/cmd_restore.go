package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/atomicfile"
	ntcrepo "github.com/ntc-project/ntc/repo"
)

type restoreOptions struct {
	store   string
	version uint64
	image   string
	to      string
	format  string
	force   bool
}

func newRestoreCommand(g *globals) *cobra.Command {
	var o restoreOptions
	cmd := &cobra.Command{
		Use:   "restore [SET] --store DIR --image NAME --to FILE",
		Short: "Write one image of a version (a disk, say) to a file",
		Long: `Restore writes one image of a version to a file: a disk of a VM as it was at
that version, to open, mount or boot elsewhere. DIR is a receiver's
repository ('ntc serve --store', then SET names the set; 'ntc ls' lists
them) or a checkpoint repository ('ntc checkpoint --out', no SET; the
images are named disk-DEVICE, ram-BLOCK, device, stream). --version picks a
version (a checkpoint's number in a checkpoint repository); the default is
the current one (the newest checkpoint).

The file is raw and sparse (its zero ranges take no space), or qcow2 with
--format qcow2 (through qemu-img). It is written under a temporary name and
renamed into place once complete, readable by its owner only: an
interrupted restore leaves no partial file. An existing FILE is refused
unless --force.

Examples:
  ntc restore vm --store ~/vms --image disk-vda --to vda.raw
  ntc restore vm --store ~/vms --version 12 --image disk-vda --to vda.qcow2 --format qcow2
  ntc restore --store /srv/ckpt/vm --version 3 --image disk-vda --to vda.raw`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.store = g.v.GetString("serve.store")
			set := ""
			if len(args) == 1 {
				set = args[0]
			}
			return runRestore(cmd.Context(), g, set, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.store, "store", "", "repository directory, or s3://BUCKET/PREFIX")
	f.Uint64Var(&o.version, "version", 0, "version (or checkpoint) number; default: the current one")
	f.StringVar(&o.image, "image", "", "image name (see 'ntc ls')")
	f.StringVar(&o.to, "to", "", "file to write")
	f.StringVar(&o.format, "format", "raw", "raw (sparse) or qcow2")
	f.BoolVar(&o.force, "force", false, "replace FILE if it exists")
	g.bind(cmd, "serve.store", "store")
	addS3EndpointFlag(g, cmd)
	return cmd
}

type restoredJSON struct {
	File    string `json:"file"`
	Format  string `json:"format"`
	Version uint64 `json:"version"`
	Size    int64  `json:"size"`
}

func runRestore(ctx context.Context, g *globals, set string, o restoreOptions) error {
	switch {
	case o.store == "":
		return usagef("restore needs --store DIR")
	case o.image == "":
		return usagef("restore needs --image NAME ('ntc ls --store %s' lists them)", o.store)
	case o.to == "":
		return usagef("restore needs --to FILE")
	case o.format != "raw" && o.format != "qcow2":
		return usagef("--format %q: want raw or qcow2", o.format)
	}
	if _, err := os.Lstat(o.to); err == nil && !o.force {
		return usagef("%s exists: give --force to replace it, or another --to", o.to)
	}
	x, st, version, err := openRestoreImage(ctx, g, set, o)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := writeRestored(ctx, o.to, o.format, x, st); err != nil {
		return err
	}
	if g.json {
		return writeJSON(g.stdout, restoredJSON{File: o.to, Format: o.format, Version: version, Size: x.Size})
	}
	fmt.Fprintf(g.stdout, "wrote %s (%s, %s) from version %d\n", o.to, o.format, humanBytes(x.Size), version)
	return nil
}

type readStore interface {
	chunk.Store
	Close() error
}

// openRestoreImage finds the image's index and the store holding its
// chunks: a repository on S3 fetches them into its cache first, with a
// few large GETs.
func openRestoreImage(ctx context.Context, g *globals, set string, o restoreOptions) (x *chunk.Index, st readStore, version uint64, err error) {
	if set == "" {
		return nil, nil, 0, usagef("name the SET to restore from ('ntc ls --store %s' lists them)", o.store)
	}
	repo, s3r, err := g.openReadRepo(ctx, o.store)
	if err != nil {
		return nil, nil, 0, err
	}
	if s3r != nil {
		defer func() {
			if err != nil {
				s3r.Close()
			}
		}()
	}
	m, err := repo.Current(set)
	if o.version != 0 {
		m, err = repo.Manifest(set, o.version)
	}
	if err == nil && m == nil {
		err = fmt.Errorf("%s holds no version of %s", o.store, set)
	}
	if err != nil {
		return nil, nil, 0, err
	}
	x, err = repo.Index(set, m.Version, o.image)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ntcrepo.ErrNotFound) {
		var names []string
		for _, im := range m.Images {
			names = append(names, im.Name)
		}
		return nil, nil, 0, fmt.Errorf("version %d of %s has no image %s (it has %s)", m.Version, set, o.image, strings.Join(names, ", "))
	}
	if err != nil {
		return nil, nil, 0, err
	}
	if s3r != nil {
		if err := s3r.store.Prefetch(ctx, chunk.IDs(x)); err != nil {
			return nil, nil, 0, err
		}
		return x, s3ReadStore{s3r.store, s3r}, m.Version, nil
	}
	ps, err := chunk.OpenPackStoreReadOnly(o.store)
	if err != nil {
		return nil, nil, 0, err
	}
	return x, ps, m.Version, nil
}

// s3ReadStore reads a repository on S3's chunks until Close closes it.
type s3ReadStore struct {
	*s3store.Store
	r *s3Repo
}

func (s s3ReadStore) Close() error { return s.r.Close() }

// writeRestored writes the image to path atomically, raw and sparse or
// converted to qcow2.
func writeRestored(ctx context.Context, path, format string, x *chunk.Index, st chunk.Store) error {
	if format == "raw" {
		return atomicfile.Write(path, 0o600, func(w io.Writer) error {
			f := w.(*os.File)
			if err := f.Truncate(x.Size); err != nil {
				return err
			}
			return chunk.WriteImage(ctx, f, x, st)
		})
	}
	raw, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".raw-*")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(raw.Name())
	err = raw.Truncate(x.Size)
	if err == nil {
		err = chunk.WriteImage(ctx, raw, x, st)
	}
	if cerr := raw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	qcow, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".qcow2-*")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	qcow.Close()
	defer os.Remove(qcow.Name())
	out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw.Name(), qcow.Name()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("restore: qemu-img convert (Debian's qemu-utils): %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := syncFile(qcow.Name(), 0o600); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := os.Rename(qcow.Name(), path); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// syncFile sets a file's mode and makes its content durable.
func syncFile(path string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Chmod(mode)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
