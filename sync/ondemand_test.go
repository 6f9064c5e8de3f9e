package sync

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	gosync "sync"
	"syscall"
	"testing"

	"github.com/ntc-project/ntc/internal/atomicfile"
)

// onDemandPeers receives into a repository in a directory whose commits
// write no image files.
func onDemandPeers(t testing.TB) *peers {
	t.Helper()
	repo, err := OpenRepo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	repo.ImagesOnDemand()
	t.Cleanup(func() { repo.Close() })
	return newPeersOn(t, repo, nil)
}

// TestImagesOnDemandWritesNoFilesAtCommit: pushes into an on-demand
// repository leave no image file; Materialize writes the version asked
// for, from a reader that opened the repository beside the receiver.
func TestImagesOnDemandWritesNoFilesAtCommit(t *testing.T) {
	p := onDemandPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(11, 11))
	s := &Sender{StateDir: t.TempDir()}
	disk, ram := randomData(r, 1<<20), randomData(r, 256<<10)
	for i := range 2 {
		copy(disk[i*64<<10:], randomData(r, 8192))
		if _, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": disk, "ram": ram})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(p.repo.ImagePath("vm", "disk")); !os.IsNotExist(err) {
		t.Fatalf("an on-demand commit wrote the image file (stat: %v)", err)
	}
	reader, err := OpenRepoForReading(p.repo.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	// What a materialiser killed mid-write leaves goes at the next one.
	left := filepath.Join(p.repo.Dir(), "sets", "vm", "images", ".disk.tmp-killed")
	if err := os.MkdirAll(filepath.Dir(left), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(left, disk[:4096], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reader.Materialize(ctx, "vm", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("a killed materialiser's temporary file is still there (stat: %v)", err)
	}
	assertMaterialized(t, reader, "vm", map[string][]byte{"disk": disk, "ram": ram})
	if st := reader.readState("vm"); st != (materializeState{Version: 2}) {
		t.Fatalf("state after Materialize: %+v", st)
	}
	// A third push changes the files nothing; the next Materialize moves
	// them in place.
	copy(disk[512<<10:], randomData(r, 8192))
	if _, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": disk, "ram": ram})); err != nil {
		t.Fatal(err)
	}
	if st := reader.readState("vm"); st.Version != 2 {
		t.Fatalf("an on-demand commit moved the files: %+v", st)
	}
	if err := reader.Materialize(ctx, "vm", 3); err != nil {
		t.Fatal(err)
	}
	assertMaterialized(t, reader, "vm", map[string][]byte{"disk": disk, "ram": ram})
}

// TestMaterializeRedoTowardsAnotherVersion: files left half-way from
// version 1 to 2 (a Ctrl-C) are brought to 3 correctly: no index
// describes the mix, so they are written whole.
func TestMaterializeRedoTowardsAnotherVersion(t *testing.T) {
	p := onDemandPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(12, 12))
	s := &Sender{StateDir: t.TempDir()}
	// Each version is the base with one range changed: 3 has 1's bytes
	// where 2 differs.
	base := randomData(r, 1<<20)
	var versions [][]byte
	for i := range 3 {
		disk := bytes.Clone(base)
		copy(disk[i*300<<10:], randomData(r, 16<<10))
		versions = append(versions, disk)
		if _, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.repo.Materialize(ctx, "vm", 1); err != nil {
		t.Fatal(err)
	}
	// Half of the move to 2: version 2's change written, the state says
	// applying 2. Version 3 equals 1 there, so a diff from 1 would skip it.
	if err := p.repo.writeState("vm", materializeState{Version: 1, Applying: 2}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p.repo.ImagePath("vm", "disk"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(versions[1][300<<10:316<<10], 300<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := p.repo.Materialize(ctx, "vm", 3); err != nil {
		t.Fatal(err)
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": versions[2]})
}

// TestConcurrentMaterializeTakeTurns: readers materialising one set at
// once (two resumes) take turns and both find the version they asked for.
func TestConcurrentMaterializeTakeTurns(t *testing.T) {
	p := onDemandPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(13, 13))
	disk := randomData(r, 2<<20)
	if _, err := p.push(t, ctx, &Sender{StateDir: t.TempDir()}, imageVersion(t, "vm", map[string][]byte{"disk": disk})); err != nil {
		t.Fatal(err)
	}
	var wg gosync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			reader, err := OpenRepoForReading(p.repo.Dir())
			if err != nil {
				errs[i] = err
				return
			}
			defer reader.Close()
			errs[i] = reader.Materialize(ctx, "vm", 1)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	assertMaterialized(t, p.repo, "vm", map[string][]byte{"disk": disk})
	if left, _ := filepath.Glob(filepath.Join(p.repo.Dir(), "sets", "vm", "images", ".disk*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// BenchmarkMaterialize: what a resume from an on-demand repository pays
// before its copy starts. full writes a 128 MiB incompressible image from
// the packs into no file, against copy, the same bytes written to a file
// from memory (the floor of any write; the packs are in the page cache,
// as right after a push); move brings the files from one version to the
// next, 1% of the image apart (a later resume).
func BenchmarkMaterialize(b *testing.B) {
	const size = 128 << 20
	p := onDemandPeers(b)
	ctx := b.Context()
	r := rand.New(rand.NewPCG(14, 14))
	disk := randomData(r, size)
	s := &Sender{StateDir: b.TempDir()}
	if _, err := p.push(b, ctx, s, imageVersion(b, "vm", map[string][]byte{"disk": disk})); err != nil {
		b.Fatal(err)
	}
	for off := 0; off < size; off += 100 << 20 / 16 {
		copy(disk[off:], randomData(r, 64<<10))
	}
	if _, err := p.push(b, ctx, s, imageVersion(b, "vm", map[string][]byte{"disk": disk})); err != nil {
		b.Fatal(err)
	}
	images := filepath.Join(p.repo.Dir(), "sets", "vm", "images")
	b.Run("copy", func(b *testing.B) {
		b.SetBytes(size)
		dir := b.TempDir()
		for b.Loop() {
			b.StopTimer()
			os.Remove(filepath.Join(dir, "disk"))
			syscall.Sync() // what earlier writes left dirty is not this write's
			b.StartTimer()
			if err := atomicfile.WriteBytes(filepath.Join(dir, "disk"), 0o600, disk); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			if err := os.RemoveAll(images); err != nil {
				b.Fatal(err)
			}
			syscall.Sync()
			b.StartTimer()
			if err := p.repo.Materialize(ctx, "vm", 2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("move", func(b *testing.B) {
		v := uint64(1)
		for b.Loop() {
			if err := p.repo.Materialize(ctx, "vm", v); err != nil {
				b.Fatal(err)
			}
			v = 3 - v
		}
	})
}

// TestMaterializeBesideCommits: a reader materialises the current version
// while the receiver commits newer ones into the same repository (a
// resume beside a running serve): neither waits for the other to fail,
// and each time the files hold exactly the version asked for.
func TestMaterializeBesideCommits(t *testing.T) {
	p := onDemandPeers(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(15, 15))
	disk := randomData(r, 2<<20)
	var mu gosync.Mutex
	pushed := map[uint64][]byte{}
	s := &Sender{StateDir: t.TempDir()}
	// Recorded before the push: the reader may see the version current
	// before the push returns.
	pushOne := func() error {
		mu.Lock()
		v := uint64(len(pushed) + 1)
		pushed[v] = bytes.Clone(disk)
		mu.Unlock()
		res, err := p.push(t, ctx, s, imageVersion(t, "vm", map[string][]byte{"disk": disk}))
		if err == nil && res.Version != v {
			err = fmt.Errorf("pushed version %d, want %d", res.Version, v)
		}
		return err
	}
	if err := pushOne(); err != nil {
		t.Fatal(err)
	}
	reader, err := OpenRepoForReading(p.repo.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var pushErr error
	pushing := make(chan struct{})
	changes := rand.New(rand.NewPCG(16, 16))
	go func() {
		defer close(pushing)
		for i := range 6 {
			copy(disk[i*256<<10:], randomData(changes, 32<<10))
			if pushErr = pushOne(); pushErr != nil {
				return
			}
		}
	}()
	for moved := 0; ; moved++ {
		select {
		case <-pushing:
			if pushErr != nil {
				t.Fatal(pushErr)
			}
		default:
		}
		cur, err := reader.Current("vm")
		if err != nil {
			t.Fatal(err)
		}
		if err := reader.Materialize(ctx, "vm", cur.Version); err != nil {
			t.Fatalf("materialise v%d beside the commits: %v", cur.Version, err)
		}
		got, err := os.ReadFile(reader.ImagePath("vm", "disk"))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		want := pushed[cur.Version]
		mu.Unlock()
		if !bytes.Equal(got, want) {
			t.Fatalf("the files differ from version %d after materialising it", cur.Version)
		}
		if cur.Version == 7 {
			t.Logf("%d moves while 6 versions were committed", moved+1)
			break
		}
	}
	<-pushing
}
