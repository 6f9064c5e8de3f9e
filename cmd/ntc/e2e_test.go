package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ntcBin is the ntc binary built once for the tests that run real processes.
var ntcBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ntc-bin-")
	if err != nil {
		panic(err)
	}
	ntcBin = filepath.Join(dir, "ntc")
	if out, err := exec.Command("go", "build", "-o", ntcBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build ntc: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is an ntc home directory: one identity.
type node struct {
	home string
	id   string
}

func newNode(t testing.TB) node {
	t.Helper()
	n := node{home: t.TempDir()}
	out, err := n.cmd(t.Context(), "init").Output()
	if err != nil {
		t.Fatalf("ntc init: %v", err)
	}
	n.id = strings.TrimSpace(string(out))
	return n
}

func (n node) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, ntcBin, args...)
	c.Env = append(os.Environ(), "NTC_HOME="+n.home)
	return c
}

// serve starts 'ntc serve' and returns its address once it listens.
func serve(t *testing.T, n node, store string, allow ...string) (string, *exec.Cmd) {
	t.Helper()
	return serveWith(t, n, store, nil, allow...)
}

// serveWith is serve with more flags (e.g. --keep).
func serveWith(t *testing.T, n node, store string, flags []string, allow ...string) (string, *exec.Cmd) {
	t.Helper()
	c := n.cmd(context.Background(), serveArgs(store, flags, allow)...)
	stdout, _ := c.StdoutPipe()
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
		if t.Failed() {
			t.Logf("serve's log:\n%s", stderr.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed nothing: %v\n%s", err, stderr.String())
	}
	var ev listeningJSON
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("serve printed %q: %v", line, err)
	}
	return ev.Addr, c
}

// serveArgs is the command line of a loopback 'ntc serve --json'.
func serveArgs(store string, flags, allow []string) []string {
	args := append([]string{"--json", "serve", "--listen", "127.0.0.1:0", "--store", store}, flags...)
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	return args
}

func randomFile(t *testing.T, path string, size int, seed uint64) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func push(t *testing.T, ctx context.Context, n node, addr, peer string, args ...string) (pushJSON, error) {
	t.Helper()
	c := n.cmd(ctx, append([]string{"--json", "push", "--to", addr, "--peer", peer}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	var res pushJSON
	if err != nil {
		return res, fmt.Errorf("%w: %s", err, stderr.String())
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("push printed %q: %v", out, err)
	}
	return res, nil
}

func TestPushBetweenTwoProcesses(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 16<<20, 1)

	res, err := push(t, t.Context(), office, addr, home.id, img)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 1 || res.ChunkBytes != 16<<20 || res.BytesSent < 16<<20 {
		t.Fatalf("first push: %+v", res)
	}
	got, err := os.ReadFile(filepath.Join(store, "sets", "disk.img", "images", "disk.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the receiver's image differs from the pushed one (%v)", err)
	}

	// Rewrite 1% in scattered 64 KiB extents and push with --changed.
	r := rand.New(rand.NewPCG(2, 2))
	var ranges []string
	var changed int64
	for _, slot := range r.Perm(256)[:3] {
		off := slot * 64 << 10
		for i := off; i < off+64<<10; i++ {
			data[i] = byte(r.Uint32())
		}
		ranges = append(ranges, fmt.Sprintf("%d+64K", off))
		changed += 64 << 10
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = push(t, t.Context(), office, addr, home.id, img, "--changed", strings.Join(ranges, ","))
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.BytesRead > 1<<20 || res.ChunkBytes > 2*changed || res.BytesSent > uint64(3*changed) {
		t.Fatalf("second push read %d, sent %d chunk bytes and %d on the wire for %d changed: %+v", res.BytesRead, res.ChunkBytes, res.BytesSent, changed, res)
	}
	got, _ = os.ReadFile(filepath.Join(store, "sets", "disk.img", "images", "disk.img"))
	if !bytes.Equal(got, data) {
		t.Fatal("the receiver's image differs after the second push")
	}
	out, err := home.cmd(t.Context(), "ls", "--store", store).Output()
	if err != nil || !strings.Contains(string(out), "current v2") || !strings.Contains(string(out), "chunk store: ") {
		t.Fatalf("ls: %s %v", out, err)
	}
}

func TestUnknownPeerIsRefusedAndNothingChanges(t *testing.T) {
	office, home, stranger := newNode(t), newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 1<<20, 3)
	before := listTree(t, store)
	_, err := push(t, t.Context(), stranger, addr, home.id, img)
	if err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("push from an unknown peer: %v", err)
	}
	if after := listTree(t, store); after != before {
		t.Fatalf("the receiver's files changed:\nbefore %s\nafter %s", before, after)
	}
	// A wrong --peer on the sender's side is refused too.
	if _, err := push(t, t.Context(), office, addr, stranger.id, img); err == nil {
		t.Fatal("push to a receiver with another ID succeeded")
	}
}

func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s %d %v\n", p, fi.Size(), fi.ModTime().UnixNano())
		}
		return nil
	})
	return b.String()
}

func TestKilledPushResumes(t *testing.T) {
	office, home := newNode(t), newNode(t)
	store := t.TempDir()
	addr, srv := serve(t, home, store, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 24<<20, 4)

	// A slow push, killed with SIGKILL once the receiver holds some chunks.
	c := office.cmd(context.Background(), "push", img, "--to", addr, "--peer", home.id, "--bwlimit", "40Mbit")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return storeBytes(store) > 4<<20 })
	c.Process.Kill()
	c.Wait()
	held := storeBytes(store)
	if _, err := os.Stat(filepath.Join(store, "sets", "disk.img", "HEAD")); err == nil {
		t.Fatal("a version was committed by a killed push")
	}

	res, err := push(t, t.Context(), office, addr, home.id, img)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(data))
	if res.ChunkBytes > total-held+1<<20 {
		t.Fatalf("resumed push sent %d bytes of %d though the receiver held %d", res.ChunkBytes, total, held)
	}
	got, _ := os.ReadFile(filepath.Join(store, "sets", "disk.img", "images", "disk.img"))
	if !bytes.Equal(got, data) {
		t.Fatal("the receiver's image differs after the resumed push")
	}

	// Now kill the receiver mid-push: the sender fails, a new receiver on the
	// same store takes the rest, and version 1 stays intact meanwhile.
	copy(data[:8<<20], bytes.Repeat([]byte{9, 8, 7, 6, 5, 4, 3, 2, 1}, 1<<20))
	r := rand.New(rand.NewPCG(5, 5))
	for i := range data[:8<<20] {
		data[i] ^= byte(r.Uint32())
	}
	os.WriteFile(img, data, 0o644)
	c = office.cmd(context.Background(), "push", img, "--to", addr, "--peer", home.id, "--bwlimit", "20Mbit")
	c.Start()
	before := storeBytes(store)
	waitFor(t, 30*time.Second, func() bool { return storeBytes(store) > before+2<<20 })
	srv.Process.Kill()
	// The sender would notice at the idle timeout; its user gives up first.
	c.Process.Signal(os.Interrupt)
	if err := c.Wait(); err == nil {
		t.Fatal("push succeeded though the receiver was killed")
	}
	addr2, _ := serve(t, home, store, office.id)
	res, err = push(t, t.Context(), office, addr2, home.id, img)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.ChunkBytes >= 8<<20 {
		t.Fatalf("after the receiver was killed: %+v", res)
	}
	got, _ = os.ReadFile(filepath.Join(store, "sets", "disk.img", "images", "disk.img"))
	if !bytes.Equal(got, data) {
		t.Fatal("the receiver's image differs after the receiver was restarted")
	}
}

// storeBytes is the size of the receiver's chunk packs.
func storeBytes(store string) int64 {
	var n int64
	filepath.Walk(filepath.Join(store, "packs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// waitFor polls cond: the receiver's store is another process's, so there
// is nothing to wait on but the files themselves.
func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{{"", 0}, {"20Mbit", 2500000}, {"20Mb/s", 2500000}, {"2.5MB/s", 2500000}, {"500k", 500000}, {"1Gbps", 125000000}, {"100", 100}} {
		got, err := parseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"fast", "-3M", "Mbit"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("parseRate(%q) accepted", bad)
		}
	}
}

// TestPushDivergedNeedsForce: a push whose lineage does not continue the
// receiver's current version (another node's copy of the set) is stored
// but not made current; push says so and how to choose, ls lists it, and
// push --force makes it current.
func TestPushDivergedNeedsForce(t *testing.T) {
	office, laptop, home := newNode(t), newNode(t), newNode(t)
	store := t.TempDir()
	addr, _ := serve(t, home, store, office.id, laptop.id)
	dir1, dir2 := t.TempDir(), t.TempDir()
	img1, img2 := filepath.Join(dir1, "disk.img"), filepath.Join(dir2, "disk.img")
	data1 := randomFile(t, img1, 2<<20, 21)
	data2 := randomFile(t, img2, 2<<20, 22)
	if _, err := push(t, t.Context(), office, addr, home.id, img1); err != nil {
		t.Fatal(err)
	}
	_, err := push(t, t.Context(), laptop, addr, home.id, img2)
	if err == nil || !strings.Contains(err.Error(), "diverged") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("push of another copy: %v; want it refused as diverged, with what to do", err)
	}
	if got, _ := os.ReadFile(filepath.Join(store, "sets", "disk.img", "images", "disk.img")); !bytes.Equal(got, data1) {
		t.Fatal("the diverged push replaced the current version's image")
	}
	code, out, _ := ntc(t, t.Context(), "ls", "--store", store)
	if code != 0 || !strings.Contains(out, "2 versions") || !strings.Contains(out, "v2 diverged") {
		t.Fatalf("ls after the divergence: exit %d\n%s", code, out)
	}
	res, err := push(t, t.Context(), laptop, addr, home.id, "--force", img2)
	if err != nil || res.Version != 2 || res.ChunksSent != 0 {
		t.Fatalf("forced push: %v, %+v", err, res)
	}
	if got, _ := os.ReadFile(filepath.Join(store, "sets", "disk.img", "images", "disk.img")); !bytes.Equal(got, data2) {
		t.Fatal("the forced version's image is not materialized")
	}
	if code, out, _ := ntc(t, t.Context(), "ls", "--store", store); code != 0 || !strings.Contains(out, "current v2") || !strings.Contains(out, "v1 diverged") {
		t.Fatalf("ls after force: exit %d\n%s", code, out)
	}
}
