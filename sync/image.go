package sync

import (
	"context"
	"fmt"

	"github.com/ntc-project/ntc/chunk"
)

// FileImage is an image file indexed for a push: the Image to put in a
// Version, reading its chunks from the file, which stays open until Close.
type FileImage struct {
	Image
	// BytesRead is what indexing read of the file.
	BytesRead int64
	file      *chunk.File
}

// Close closes the file.
func (f *FileImage) Close() error { return f.file.Close() }

// IndexFile opens the image file at path and indexes it as image name: in
// full with the default chunking, or, when prev (the index the receiver
// holds of it) and changed (the ranges written since) are given, only
// around the changes (chunk.Update), the new chunks then travelling as
// patches against the receiver's copy. progress, if set, is told the bytes
// read as they are.
func IndexFile(ctx context.Context, path, name string, prev *chunk.Index, changed []chunk.Range, progress func(int64)) (*FileImage, error) {
	img, err := chunk.OpenFile(path)
	if err != nil {
		return nil, err
	}
	opt := chunk.Options{Progress: progress}
	f := &FileImage{Image: Image{Name: name, Source: ReaderSource{R: img}}, file: img}
	if prev == nil || changed == nil {
		prev = nil // unknown changes: index in full
	} else {
		f.Base, f.Changed = prev, changed
	}
	var st chunk.ScanStats
	f.Index, st, err = chunk.Update(ctx, img, chunk.DefaultCDC(), prev, changed, opt)
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("index %s: %w", path, err)
	}
	f.BytesRead = st.BytesRead
	return f, nil
}
