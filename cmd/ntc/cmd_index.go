package main

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ntc-project/ntc/chunk"
)

type indexOptions struct {
	prev     string
	changed  string
	readonly string
	out      string
	pages    bool
	average  string
	workers  int
}

func newIndexCommand(g *globals) *cobra.Command {
	var o indexOptions
	cmd := &cobra.Command{
		Use:   "index IMAGE",
		Short: "Index an image into content-addressed chunks",
		Long: `Index cuts IMAGE (a raw disk image, a block device, a RAM image) into chunks
and writes an index: the ordered list of chunk IDs (BLAKE3-256) and zero runs.
Holes in sparse files and all-zero 4 KiB blocks are never chunked or stored.

With --prev and --changed (or --readonly), only the regions around the changes
are read again: every other entry of the previous index is reused without
reading, and the result is identical to a full index of the new image. Ranges
are START-END or START+LENGTH with K/M/G suffixes, comma separated; START and
END may be sums, so 2G-2G+4K is the 4 KiB at 2 GiB.
Without --changed, --prev only reports what changed against it.

Examples:
  ntc index disk.img                          full index, writes disk.img.idx
  ntc index disk.img -o /tmp/a.idx --json     machine-readable summary
  ntc index disk.img --prev disk.img.idx --changed 1G+64K,2G-2G+4K
  ntc index ram.img --pages                   one chunk per 4 KiB page`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.average = g.v.GetString("chunk.average")
			o.readonly = cmp.Or(o.readonly, g.v.GetString("index.readonly"))
			return runIndex(cmd.Context(), g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.prev, "prev", "", "previous index of this image")
	f.StringVar(&o.changed, "changed", "", "ranges that changed since --prev (e.g. 1G+64K,5G-6G)")
	f.StringVar(&o.readonly, "readonly", "", "ranges known unchanged since --prev (e.g. a read-only partition); the rest is re-read")
	f.StringVarP(&o.out, "output", "o", "", "where to write the index (default IMAGE.idx)")
	f.BoolVar(&o.pages, "pages", false, "cut into fixed 4 KiB pages (for RAM images) instead of content-defined chunks")
	f.String("average", "16K", "average content-defined chunk size (min is half, max 8×)")
	f.IntVar(&o.workers, "workers", 0, "goroutines cutting and hashing (default: all cores)")
	g.bind(cmd, "chunk.average", "average")
	return cmd
}

type indexJSON struct {
	Image         string      `json:"image"`
	Index         string      `json:"index"`
	Params        string      `json:"params"`
	ImageBytes    int64       `json:"image_bytes"`
	BytesRead     int64       `json:"bytes_read"`
	DurationMS    float64     `json:"duration_ms"`
	Mode          string      `json:"mode"`
	Stats         chunk.Stats `json:"stats"`
	ReusedEntries int         `json:"reused_entries"`
	Diff          *chunk.Diff `json:"diff,omitempty"`
}

func (o indexOptions) params(prev *chunk.Index) (chunk.Params, error) {
	if prev != nil {
		return prev.Params, nil
	}
	if o.pages {
		return chunk.Pages(), nil
	}
	avg, err := chunk.ParseSize(o.average)
	if err != nil || avg < 256 || avg > 16<<20 {
		return chunk.Params{}, usagef("--average %q: want a size from 256 to 16M, like 16K", o.average)
	}
	return chunk.CDCWithAverage(uint32(avg)), nil
}

func runIndex(ctx context.Context, g *globals, o indexOptions, path string) error {
	if (o.changed != "" || o.readonly != "") && o.prev == "" {
		return usagef("--changed and --readonly describe changes since a previous index: give it with --prev")
	}
	if o.changed != "" && o.readonly != "" {
		return usagef("give --changed or --readonly, not both")
	}
	img, err := chunk.OpenFile(path)
	if err != nil {
		return err
	}
	defer img.Close()
	var prev *chunk.Index
	if o.prev != "" {
		if prev, err = chunk.ReadIndexFile(o.prev); err != nil {
			return fmt.Errorf("%w (re-create it with 'ntc index' or drop --prev)", err)
		}
	}
	p, err := o.params(prev)
	if err != nil {
		return err
	}
	out := o.out
	if out == "" {
		out = path + ".idx"
	}

	bar := g.newProgress("indexing", img.Size())
	opt := chunk.Options{Workers: o.workers, Progress: bar.Add}
	start := time.Now()
	var (
		base    *chunk.Index // with the changed ranges: index around them
		changed []chunk.Range
		mode    = "full"
	)
	if o.changed != "" || o.readonly != "" {
		if o.changed != "" {
			changed, err = chunk.ParseRanges(o.changed)
		} else {
			var ro []chunk.Range
			ro, err = chunk.ParseRanges(o.readonly)
			changed = chunk.Complement(chunk.NormalizeRanges(ro, img.Size()), img.Size())
		}
		if err != nil {
			bar.Done()
			return usageError{err}
		}
		mode, base = "incremental", prev
	}
	x, st, err := chunk.Update(ctx, img, p, base, changed, opt)
	bar.Done()
	if err != nil {
		return fmt.Errorf("index %s: %w", path, err)
	}
	elapsed := time.Since(start)
	if err := chunk.WriteIndexFile(out, x); err != nil {
		return err
	}
	res := indexJSON{
		Image: path, Index: out, Params: p.String(), ImageBytes: x.Size, BytesRead: st.BytesRead,
		DurationMS: ms(elapsed), Mode: mode, Stats: x.Stats(), ReusedEntries: st.ReusedEntries,
	}
	if prev != nil {
		d, err := chunk.Compare(prev, x)
		if err != nil {
			return err
		}
		res.Diff = &d
	}
	if g.json {
		return writeJSON(g.stdout, res)
	}
	fmt.Fprintf(g.stdout, "indexed %s (%s) in %s: read %s at %s\n", path, humanBytes(x.Size),
		elapsed.Round(time.Millisecond), humanBytes(st.BytesRead), rate(st.BytesRead, elapsed))
	fmt.Fprintf(g.stdout, "  %d chunks (%s, %s distinct), %s zero\n", res.Stats.Chunks,
		humanBytes(res.Stats.DataBytes), humanBytes(res.Stats.UniqueData), humanBytes(res.Stats.ZeroBytes))
	if mode == "incremental" {
		fmt.Fprintf(g.stdout, "  reused %d entries of the previous index without reading them\n", st.ReusedEntries)
	}
	if res.Diff != nil {
		printDiff(g, res.Diff)
	}
	fmt.Fprintf(g.stdout, "  wrote %s\n", out)
	return nil
}

func printDiff(g *globals, d *chunk.Diff) {
	fmt.Fprintf(g.stdout, "  against the previous index: %d new chunks (%s) to send, %d reused (%s), %s zero\n",
		d.NewChunks, humanBytes(d.NewBytes), d.ReusedChunks, humanBytes(d.ReusedBytes), humanBytes(d.ZeroBytes))
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (got %d arguments)", cmd.Name(), names, len(args))
		}
		return nil
	}
}
