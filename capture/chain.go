package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/ntc-project/ntc/chunk"
)

// Chain is a frozen disk image as the guest saw it: a qcow2 or raw image and
// its backing chain, read directly from the layer files. `qemu-img map`
// says, for every guest range, whether it reads as zeros or which layer file
// holds it at which offset; reads go straight to that file. The chain must
// not change while it is read: open only layers no QEMU writes to (a layer
// frozen by a snapshot).
type Chain struct {
	size    int64
	extents []extent
	files   []*os.File // by depth; nil for layers holding no data
	names   []string
}

var (
	_ chunk.Image      = (*Chain)(nil)
	_ chunk.HoleLister = (*Chain)(nil)
)

// extent is a guest range of a Chain.
type extent struct {
	off, len int64
	zero     bool
	depth    int   // layer holding the data (when !zero)
	host     int64 // offset in that layer's file
}

// mapEntry is one element of `qemu-img map --output=json`.
type mapEntry struct {
	Start   int64  `json:"start"`
	Length  int64  `json:"length"`
	Depth   int    `json:"depth"`
	Present bool   `json:"present"`
	Zero    bool   `json:"zero"`
	Data    bool   `json:"data"`
	Offset  *int64 `json:"offset"`
}

// imageInfo is one element of `qemu-img info --backing-chain --output=json`.
type imageInfo struct {
	Filename       string `json:"filename"`
	Format         string `json:"format"`
	VirtualSize    int64  `json:"virtual-size"`
	Encrypted      bool   `json:"encrypted"`
	FormatSpecific struct {
		Type string `json:"type"`
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

// OpenChain maps the image at path (format "qcow2" or "raw") with its
// backing chain and opens the layer files that hold data. Layers must be
// local files in qcow2 (unencrypted, uncompressed where the guest reads) or
// raw format; anything else is ErrUnsupported.
func OpenChain(ctx context.Context, path, format string) (c *Chain, err error) {
	infos, err := chainInfo(ctx, path, format)
	if err != nil {
		return nil, err
	}
	var entries []mapEntry
	if err := qemuImgJSON(ctx, &entries, "map", "--output=json", "-f", format, path); err != nil {
		return nil, err
	}
	c = &Chain{files: make([]*os.File, len(infos)), names: make([]string, len(infos))}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if len(infos) > 0 {
		c.size = infos[0].VirtualSize
	}
	pos := int64(0)
	for _, e := range entries {
		if e.Start != pos || e.Length <= 0 {
			return nil, fmt.Errorf("qemu-img map of %s: entry at %d, want %d", path, e.Start, pos)
		}
		pos += e.Length
		x := extent{off: e.Start, len: e.Length, zero: e.Zero || !e.Data, depth: e.Depth}
		if !x.zero {
			if e.Depth < 0 || e.Depth >= len(infos) {
				return nil, fmt.Errorf("qemu-img map of %s: depth %d in a chain of %d layers", path, e.Depth, len(infos))
			}
			if e.Offset == nil {
				return nil, fmt.Errorf("%s: guest range %d+%d is stored without a plain file offset (compressed or encrypted clusters): %w: %w",
					infos[e.Depth].Filename, e.Start, e.Length, ErrLayerNotPlain, ErrUnsupported)
			}
			x.host = *e.Offset
			if c.files[e.Depth] == nil {
				if err := c.open(e.Depth, infos[e.Depth]); err != nil {
					return nil, err
				}
			}
		}
		if n := len(c.extents); n > 0 {
			if p := &c.extents[n-1]; p.zero && x.zero {
				p.len += x.len
				continue
			}
		}
		c.extents = append(c.extents, x)
	}
	if pos != c.size {
		return nil, fmt.Errorf("qemu-img map of %s covers %d bytes, the image has %d", path, pos, c.size)
	}
	return c, nil
}

// open opens the file holding layer depth's data.
func (c *Chain) open(depth int, info imageInfo) error {
	file := info.Filename
	if info.FormatSpecific.Data.DataFile != "" {
		file = info.FormatSpecific.Data.DataFile
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("open disk layer: %w", err)
	}
	c.files[depth], c.names[depth] = f, file
	return nil
}

// chainInfo lists the layers of the image at path, top first, and refuses
// what the Chain cannot read.
func chainInfo(ctx context.Context, path, format string) ([]imageInfo, error) {
	var infos []imageInfo
	if err := qemuImgJSON(ctx, &infos, "info", "--backing-chain", "--output=json", "-f", format, path); err != nil {
		return nil, err
	}
	if len(infos) == 0 {
		return nil, fmt.Errorf("qemu-img info of %s listed no image", path)
	}
	for _, in := range infos {
		if err := checkLayer(in.Filename, in.Format, in.Encrypted); err != nil {
			return nil, err
		}
	}
	return infos, nil
}

// checkLayer refuses a layer ntc cannot read as a plain file.
func checkLayer(file, format string, encrypted bool) error {
	switch {
	case format != "qcow2" && format != "raw":
		return fmt.Errorf("disk layer %s has format %s (ntc reads qcow2 and raw layers): %w: %w", file, format, ErrLayerNotPlain, ErrUnsupported)
	case encrypted:
		return fmt.Errorf("disk layer %s is encrypted: %w", file, ErrUnsupported)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("disk layer %q is not a local file ntc can read (%v): %w", file, err, ErrUnsupported)
	}
	if !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0 {
		return fmt.Errorf("disk layer %s is not a regular file or block device: %w", file, ErrUnsupported)
	}
	return nil
}

// Size returns the guest-visible size.
func (c *Chain) Size() int64 { return c.size }

// Holes returns the ranges that read as zeros: never read.
func (c *Chain) Holes(ctx context.Context) ([]chunk.Range, error) {
	var out []chunk.Range
	for _, x := range c.extents {
		if x.zero {
			out = append(out, chunk.Range{Off: x.off, Len: x.len})
		}
	}
	return out, nil
}

// DataBytes returns the bytes of the image that do not read as zeros
// according to the map.
func (c *Chain) DataBytes() int64 {
	var n int64
	for _, x := range c.extents {
		if !x.zero {
			n += x.len
		}
	}
	return n
}

// ReadAt reads guest bytes at off from the layers that hold them.
func (c *Chain) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read disk at %d: negative offset", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	n := 0
	i := sort.Search(len(c.extents), func(i int) bool { return c.extents[i].off+c.extents[i].len > off })
	for ; n < len(p) && i < len(c.extents); i++ {
		x := c.extents[i]
		pos := off + int64(n)
		want := min(int64(len(p)-n), x.off+x.len-pos)
		buf := p[n : n+int(want)]
		if x.zero {
			clear(buf)
		} else {
			m, err := c.files[x.depth].ReadAt(buf, x.host+(pos-x.off))
			if m < len(buf) {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return n + m, fmt.Errorf("read disk at %d from %s: %w", pos, c.names[x.depth], err)
			}
		}
		n += int(want)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close closes the layer files.
func (c *Chain) Close() error {
	var errs []error
	for _, f := range c.files {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	clear(c.files)
	return errors.Join(errs...)
}

// LayerExtents returns the guest ranges a qcow2 layer holds itself, without
// its backing chain: for an overlay frozen by a checkpoint, exactly what the
// guest wrote (data or zeros) while it was the active layer, in whole
// clusters.
func LayerExtents(ctx context.Context, path string) ([]chunk.Range, error) {
	spec, err := json.Marshal(map[string]any{
		"driver":  "qcow2",
		"backing": nil,
		"file":    map[string]any{"driver": "file", "filename": path},
	})
	if err != nil {
		return nil, err
	}
	var entries []mapEntry
	if err := qemuImgJSON(ctx, &entries, "map", "--output=json", "json:"+string(spec)); err != nil {
		return nil, err
	}
	var out []chunk.Range
	for _, e := range entries {
		if !e.Present {
			continue
		}
		if n := len(out); n > 0 && out[n-1].End() == e.Start {
			out[n-1].Len += e.Length
			continue
		}
		out = append(out, chunk.Range{Off: e.Start, Len: e.Length})
	}
	return out, nil
}

// qemuImgJSON runs qemu-img and decodes its JSON output into v.
func qemuImgJSON(ctx context.Context, v any, args ...string) error {
	out, err := qemuImg(ctx, args...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("qemu-img %s: decode output: %w", args[0], err)
	}
	return nil
}

func qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoQemuImg, err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("qemu-img %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
