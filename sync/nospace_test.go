package sync

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"

	"github.com/ntc-project/ntc/transport"
	"github.com/ntc-project/ntc/transport/transporttest"
)

// A receiver whose disk fills up refuses the push with a clear error and
// keeps its previous version.
func TestFullDiskKeepsThePreviousVersion(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as the receiver's disk")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	repo, err := OpenRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	srv, cli := transporttest.Identity(t), transporttest.Identity(t)
	l := transporttest.Listen(t, srv, transport.AllowIDs(cli.ID()), transport.Config{})
	serveAll(t, l, &Receiver{Repo: repo}, func(error) {})
	p := &peers{repo: repo, addr: l.Addr().String(), srvID: srv.ID(), client: cli}
	r := rand.New(rand.NewPCG(6, 6))
	small := map[string][]byte{"disk": randomData(r, 1<<20)}
	s := &Sender{StateDir: t.TempDir()}
	if _, err := p.push(t, t.Context(), s, imageVersion(t, "vm", small)); err != nil {
		t.Fatal(err)
	}
	big := map[string][]byte{"disk": randomData(r, 8<<20)}
	_, err = p.push(t, t.Context(), s, imageVersion(t, "vm", big))
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("push onto a full disk: %v, want ErrNoSpace", err)
	}
	if m, err := repo.Current("vm"); err != nil || m.Version != 1 {
		t.Fatalf("current version after the failed push: %+v, %v", m, err)
	}
	assertMaterialized(t, repo, "vm", small)
}
