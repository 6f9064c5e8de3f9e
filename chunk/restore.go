package chunk

import (
	"context"
	"fmt"
	"io"
)

// WriteImage writes the image x describes, from the chunks in st, to w,
// which starts empty and x.Size long (a truncated file): zero entries are
// not written, so a file stays sparse there. Consecutive chunks go out in
// writes of up to 4 MiB. Every chunk is verified on the way (Store.Get).
func WriteImage(ctx context.Context, w io.WriterAt, x *Index, st Store) error {
	var buf []byte
	var at int64
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		_, err := w.WriteAt(buf, at)
		buf = buf[:0]
		return err
	}
	for _, e := range x.Entries {
		if e.Zero {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		data, err := st.Get(ctx, e.ID)
		if err != nil {
			return fmt.Errorf("image at %d: %w", e.Offset, err)
		}
		if int64(len(data)) != e.Length {
			return fmt.Errorf("image at %d: chunk %s has %d bytes, the index says %d", e.Offset, e.ID.Short(), len(data), e.Length)
		}
		if len(buf) > 0 && (e.Offset != at+int64(len(buf)) || len(buf) >= 4<<20) {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(buf) == 0 {
			at = e.Offset
		}
		buf = append(buf, data...)
	}
	return flush()
}
