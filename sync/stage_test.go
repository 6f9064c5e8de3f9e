package sync

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
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
