package sync

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/directio"
)

// A first version is written while its chunks arrive; chunks the store
// already held (from another set here) and repeated chunks are filled in
// at the commit, and zero ranges stay holes.
func TestStagedImageIsComplete(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(7, 7))
	shared := randomData(r, 3<<20)
	if _, err := p.push(t, ctx, &Sender{}, imageVersion(t, "a", map[string][]byte{"disk": shared})); err != nil {
		t.Fatal(err)
	}
	block := randomData(r, 256<<10)
	var disk []byte
	disk = append(disk, shared...)
	disk = append(disk, make([]byte, 1<<20)...)
	disk = append(disk, block...)
	disk = append(disk, randomData(r, 2<<20)...)
	disk = append(disk, block...) // the same content twice
	res, err := p.push(t, ctx, &Sender{}, imageVersion(t, "b", map[string][]byte{"disk": disk}))
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunkBytes >= int64(len(disk)-len(shared)) {
		t.Fatalf("sent %d chunk bytes: the %d shared with set a should not travel", res.ChunkBytes, len(shared))
	}
	assertMaterialized(t, p.repo, "b", map[string][]byte{"disk": disk})
	assertNoStaged(t, p.repo, "b")
}

// A push that fails leaves no staged file and no image behind.
func TestFailedPushLeavesNoStagedFile(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(8, 8))
	v := imageVersion(t, "vm", map[string][]byte{"disk": randomData(r, 1<<20)})
	v.Images[0].Source = &corrupting{src: v.Images[0].Source, every: true}
	if _, err := p.push(t, ctx, &Sender{unverified: true}, v); !errors.Is(err, ErrBadChunks) {
		t.Fatalf("push of damaged chunks: %v, want ErrBadChunks", err)
	}
	if _, err := os.Stat(p.repo.ImagePath("vm", "disk")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an image file exists after a failed first push: %v", err)
	}
	assertNoStaged(t, p.repo, "vm")
}

func assertNoStaged(t *testing.T, repo *Repo, set string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(repo.ImagePath(set, "x")), ".*.stage-*"))
	if len(left) > 0 {
		t.Fatalf("staged files left: %v", left)
	}
}

// An image file that another process holds locked, as QEMU does with the
// backing file of a resumed copy, is replaced by the next version, not
// rewritten under it: the holder keeps reading the version it opened.
func TestImageInUseIsReplacedNotRewritten(t *testing.T) {
	p := newPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(11, 11))
	disk := randomData(r, 4<<20)
	if _, err := p.push(t, ctx, &Sender{}, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p.repo.ImagePath("vm", "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// QEMU's image locking: a shared OFD lock on a few bytes.
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 100, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	disk2 := append([]byte(nil), disk...)
	copy(disk2[1<<20:], randomData(r, 64<<10))
	if _, err := p.push(t, ctx, &Sender{}, imageVersion(t, "vm", map[string][]byte{"disk": disk2})); err != nil {
		t.Fatal(err)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk2})
	got := make([]byte, len(disk))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, disk) {
		t.Fatal("the locked file was rewritten under its holder")
	}
}

// Several data streams write runs of chunks of any length into one staged
// file at once, through direct I/O where the file system offers it (the
// runs' whole blocks) and the page cache (their ends): the file holds
// every chunk where its entries say, the chunks written through both.
func TestStageWritersShareBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	data := randomData(r, 6<<20)
	x := &chunk.Index{Size: int64(len(data))}
	for off := int64(0); off < x.Size; {
		n := min(1+r.Int64N(3*directio.Align), x.Size-off)
		x.Entries = append(x.Entries, chunk.Entry{Offset: off, Length: n, ID: chunk.Sum(data[off : off+n])})
		off += n
	}
	f, err := os.CreateTemp(t.TempDir(), "stage-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(x.Size); err != nil {
		t.Fatal(err)
	}
	sf := &stagedFile{f: f, x: x, written: make([]atomic.Bool, len(x.Entries)), direct: directio.Open(f.Name())}
	defer sf.closeDirect()
	if sf.direct == nil {
		t.Logf("%s offers no direct I/O: the page cache only", filepath.Dir(f.Name()))
	}
	s := &staging{files: []*stagedFile{sf}, at: map[chunk.ID][]stageTarget{}}
	for j, e := range x.Entries {
		s.at[e.ID] = append(s.at[e.ID], stageTarget{0, j})
	}
	// Four writers take runs of consecutive entries in turn, so that
	// neighbouring runs end and start inside one block.
	var g errgroup.Group
	for w := range 4 {
		g.Go(func() error {
			sw := &stageWriter{s: s}
			for j := w * 7; j < len(x.Entries); j += 4 * 7 {
				for _, e := range x.Entries[j:min(j+7, len(x.Entries))] {
					if err := sw.put(e.ID, data[e.Offset:e.End()]); err != nil {
						return err
					}
				}
			}
			return sw.flush()
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if sf.noDir.Load() {
		t.Logf("direct writes refused: the page cache only")
	}
	for j := range x.Entries {
		if !sf.written[j].Load() {
			t.Fatalf("entry %d not marked written", j)
		}
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the staged file differs from the chunks written")
	}
}
