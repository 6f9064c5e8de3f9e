package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/s3test"
)

// s3Bed is an S3 server (versitygw, or the one the environment names:
// see package s3test) with a bucket, which the ntc processes the test
// starts reach the standard AWS way.
type s3Bed struct {
	srv    *s3test.Server
	bucket string
	url    string // the repository: s3://BUCKET/repo
}

func newS3Bed(t *testing.T) *s3Bed {
	t.Helper()
	srv := s3test.Start(t)
	for _, kv := range append(s3Env(srv), "AWS_EC2_METADATA_DISABLED=true") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	bucket := srv.NewBucket(t)
	return &s3Bed{srv: srv, bucket: bucket, url: "s3://" + bucket + "/repo"}
}

// packs lists the keys of the repository's packs.
// largestPack names the largest pack in the bucket: one of the first
// push's, whose chunks every later version shares. (Keys sort by name,
// which says nothing of which push wrote a pack.)
func (b *s3Bed) largestPack(t *testing.T) string {
	t.Helper()
	out, err := b.srv.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket), Prefix: aws.String("repo/packs/")})
	if err != nil {
		t.Fatal(err)
	}
	var key string
	var size int64 = -1
	for _, o := range out.Contents {
		if aws.ToInt64(o.Size) > size {
			key, size = aws.ToString(o.Key), aws.ToInt64(o.Size)
		}
	}
	if key == "" {
		t.Fatal("the bucket holds no pack")
	}
	return key
}

// listings lists the keys of the packs' listings: a pack is stored once
// its listing is.
func (b *s3Bed) listings(t *testing.T) []string { return b.keys(t, "repo/index/") }

// keys lists the keys under prefix.
func (b *s3Bed) keys(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := b.srv.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// lsStore runs 'ntc ls --json' on store as n.
func lsStore(t *testing.T, n node, store string) map[string]lsJSON {
	t.Helper()
	out, err := n.cmd(t.Context(), "--json", "ls", "--store", store).Output()
	if err != nil {
		t.Fatalf("ls %s: %v: %s", store, err, stderrOf(err))
	}
	var sets []lsJSON
	if err := json.Unmarshal(out, &sets); err != nil {
		t.Fatalf("ls printed %q: %v", out, err)
	}
	m := map[string]lsJSON{}
	for _, s := range sets {
		m[s.Set] = s
	}
	return m
}

// restoreFrom restores image of version v (0: the current one) of set
// from store as n and returns its bytes.
func restoreFrom(t *testing.T, n node, store, set, image string, v uint64) []byte {
	t.Helper()
	to := filepath.Join(t.TempDir(), "restored")
	args := []string{"restore", set, "--store", store, "--image", image, "--to", to}
	if v != 0 {
		args = append(args, "--version", fmt.Sprint(v))
	}
	if out, err := n.cmd(t.Context(), args...).CombinedOutput(); err != nil {
		t.Fatalf("restore %s v%d: %v: %s", set, v, err, out)
	}
	b, err := os.ReadFile(to)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scramble rewrites n scattered 64 KiB extents of data and returns them
// as push's --changed takes them, and how many bytes changed.
func scramble(data []byte, n int, seed uint64) (string, int64) {
	r := rand.New(rand.NewPCG(seed, seed))
	var ranges []string
	for _, slot := range r.Perm(len(data) / (64 << 10))[:n] {
		off := slot * 64 << 10
		for i := off; i < off+64<<10; i++ {
			data[i] = byte(r.Uint32())
		}
		ranges = append(ranges, fmt.Sprintf("%d+64K", off))
	}
	return strings.Join(ranges, ","), int64(n) << 16
}

// TestServeS3: 'ntc serve --store s3://…' receives a push into the
// bucket, then a second that sends only what changed (bytes counted);
// ls lists both versions, restore gives back each byte for byte, and the
// receiver wrote no image file (they are materialised on demand).
func TestServeS3(t *testing.T) {
	bed := newS3Bed(t)
	url := bed.url
	office, home := newNode(t), newNode(t)
	addr, _ := serve(t, home, url, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 16<<20, 11)
	orig := slices.Clone(data)

	res, err := push(t, t.Context(), office, addr, home.id, img)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 1 || res.ChunkBytes != 16<<20 {
		t.Fatalf("first push: %+v", res)
	}
	ranges, changed := scramble(data, 3, 12)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = push(t, t.Context(), office, addr, home.id, img, "--changed", ranges)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.ChunkBytes > 2*changed || res.BytesSent > uint64(3*changed) {
		t.Fatalf("second push sent %d chunk bytes and %d on the wire for %d changed: %+v", res.ChunkBytes, res.BytesSent, changed, res)
	}

	sets := lsStore(t, office, url)
	s := sets["disk.img"]
	if len(sets) != 1 || !slices.Equal(s.Versions, []uint64{1, 2}) || s.Current == nil || s.Current.Version != 2 || s.Current.Base != 1 {
		t.Fatalf("ls: %+v", sets)
	}
	if got := restoreFrom(t, office, url, "disk.img", "disk.img", 1); !bytes.Equal(got, orig) {
		t.Fatal("version 1 restored from the bucket differs from the first push")
	}
	if got := restoreFrom(t, office, url, "disk.img", "disk.img", 0); !bytes.Equal(got, data) {
		t.Fatal("the current version restored from the bucket differs from the second push")
	}
	images, _ := filepath.Glob(filepath.Join(home.home, "cache", "s3", "*", "repo", "sets", "*", "images", "*"))
	if len(images) != 0 {
		t.Fatalf("the S3 receiver wrote image files: %v", images)
	}

	// check reads every chunk back from the bucket; a pack lost from
	// it makes both versions damaged.
	rep, err := checkStore(t, office, url)
	if err != nil || rep.Owners != 2 || rep.Read != rep.Chunks || rep.Chunks < 256 {
		t.Fatalf("check: %+v, %v", rep, err)
	}
	lost := &s3.DeleteObjectInput{Bucket: aws.String(bed.bucket), Key: aws.String(bed.largestPack(t))}
	if _, err := bed.srv.Client().DeleteObject(t.Context(), lost); err != nil {
		t.Fatal(err)
	}
	rep, err = checkStore(t, office, url)
	if err == nil || len(rep.Broken) != 2 || len(rep.Damaged)+len(rep.Missing) == 0 {
		t.Fatalf("check after a pack was lost: %+v, %v", rep, err)
	}
}

// checkStore runs 'ntc check --read-data --json' on store as n.
func checkStore(t *testing.T, n node, store string) (chunk.CheckReport, error) {
	t.Helper()
	var rep chunk.CheckReport
	out, err := n.cmd(t.Context(), "--json", "check", store, "--read-data").Output()
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("check printed %q (%v): %v", out, err, jerr)
	}
	return rep, err
}

// TestServeS3TwoReceivers: two serves on one bucket receive pushes of two
// sets at once, then each set's next version through the other receiver
// (a delta against a version the other one committed): every version is
// committed, and each set restores as pushed.
func TestServeS3TwoReceivers(t *testing.T) {
	url := newS3Bed(t).url
	a, b, home1, home2 := newNode(t), newNode(t), newNode(t), newNode(t)
	addr1, _ := serve(t, home1, url, a.id, b.id)
	addr2, _ := serve(t, home2, url, a.id, b.id)
	type sender struct {
		n    node
		img  string
		data []byte
	}
	senders := []*sender{{n: a, img: filepath.Join(t.TempDir(), "a.img")}, {n: b, img: filepath.Join(t.TempDir(), "b.img")}}
	for i, s := range senders {
		s.data = randomFile(t, s.img, 8<<20, uint64(20+i))
	}
	// pushAll pushes each sender's image through the receivers given, at
	// once, and returns what each push did.
	pushAll := func(addrs, ids []string, args func(i int) []string) []pushJSON {
		t.Helper()
		out := make([]pushJSON, len(senders))
		errs := make(chan error, len(senders))
		for i, s := range senders {
			go func() {
				var err error
				out[i], err = push(t, t.Context(), s.n, addrs[i], ids[i], append([]string{s.img}, args(i)...)...)
				errs <- err
			}()
		}
		for range senders {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	res := pushAll([]string{addr1, addr2}, []string{home1.id, home2.id}, func(int) []string { return nil })
	for i, r := range res {
		if r.Version != 1 || r.ChunkBytes != 8<<20 {
			t.Fatalf("first push of sender %d: %+v", i, r)
		}
	}
	changed := make([]string, len(senders))
	for i, s := range senders {
		changed[i], _ = scramble(s.data, 2, uint64(30+i))
		if err := os.WriteFile(s.img, s.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res = pushAll([]string{addr2, addr1}, []string{home2.id, home1.id}, func(i int) []string { return []string{"--changed", changed[i]} })
	for i, r := range res {
		if r.Version != 2 || r.ChunkBytes > 4*64<<10 {
			t.Fatalf("second push of sender %d, through the other receiver: %+v", i, r)
		}
	}
	sets := lsStore(t, a, url)
	for _, s := range senders {
		name := filepath.Base(s.img)
		if si := sets[name]; !slices.Equal(si.Versions, []uint64{1, 2}) || si.Current == nil || si.Current.Version != 2 {
			t.Fatalf("ls %s: %+v", name, sets[name])
		}
		if got := restoreFrom(t, a, url, name, name, 0); !bytes.Equal(got, s.data) {
			t.Fatalf("%s restored from the bucket differs from its last push", name)
		}
	}
}

// TestServeS3KilledMidPush: the S3 receiver killed (SIGKILL) mid-push
// leaves the previous version current and whole; a new receiver on the
// same bucket takes the push again, without what reached the bucket.
func TestServeS3KilledMidPush(t *testing.T) {
	bed := newS3Bed(t)
	url := bed.url
	office, home := newNode(t), newNode(t)
	addr, srv := serve(t, home, url, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 32<<20, 40)
	if _, err := push(t, t.Context(), office, addr, home.id, img); err != nil {
		t.Fatal(err)
	}
	orig := slices.Clone(data)
	r := rand.New(rand.NewPCG(41, 41))
	for i := range data[:24<<20] {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Killed once a pack of the push (16 MiB, the first of two) is
	// stored: its listing is in the bucket (a pack whose listing is not
	// counts for nothing, chunk/s3store/pack.go).
	before := len(bed.listings(t))
	c := office.cmd(context.Background(), "push", img, "--to", addr, "--peer", home.id, "--bwlimit", "20Mbit")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { return len(bed.listings(t)) > before })
	srv.Process.Kill()
	c.Process.Signal(os.Interrupt)
	if err := c.Wait(); err == nil {
		t.Fatal("push succeeded though the receiver was killed")
	}
	if s := lsStore(t, office, url)["disk.img"]; !slices.Equal(s.Versions, []uint64{1}) || s.Current == nil || s.Current.Version != 1 {
		t.Fatalf("after the receiver was killed: %+v", s)
	}
	if got := restoreFrom(t, office, url, "disk.img", "disk.img", 0); !bytes.Equal(got, orig) {
		t.Fatal("version 1 is not intact after the receiver was killed mid-push")
	}

	addr2, _ := serve(t, home, url, office.id)
	res, err := push(t, t.Context(), office, addr2, home.id, img)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.ChunkBytes > 12<<20 {
		t.Fatalf("the push again sent %d chunk bytes of 24 MiB changed, 16 MiB of which were in the bucket: %+v", res.ChunkBytes, res)
	}
	if got := restoreFrom(t, office, url, "disk.img", "disk.img", 0); !bytes.Equal(got, data) {
		t.Fatal("version 2 restored from the bucket differs from the push")
	}
}

// TestServeS3Keep: an S3 receiver with --keep 1 removes the older version
// from the set's head after the next push; the kept one restores whole.
func TestServeS3Keep(t *testing.T) {
	url := newS3Bed(t).url
	office, home := newNode(t), newNode(t)
	addr, _ := serveWith(t, home, url, []string{"--keep", "1"}, office.id)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := randomFile(t, img, 4<<20, 50)
	for i := range 2 {
		if i == 1 {
			scramble(data, 4, 51)
			if err := os.WriteFile(img, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := push(t, t.Context(), office, addr, home.id, img); err != nil {
			t.Fatal(err)
		}
	}
	// The receiver prunes after it answered the push.
	waitFor(t, 30*time.Second, func() bool { return len(lsStore(t, office, url)["disk.img"].Versions) == 1 })
	if s := lsStore(t, office, url)["disk.img"]; !slices.Equal(s.Versions, []uint64{2}) || s.Current == nil || s.Current.Version != 2 {
		t.Fatalf("ls after two pushes with --keep 1: %+v", s)
	}
	if got := restoreFrom(t, office, url, "disk.img", "disk.img", 0); !bytes.Equal(got, data) {
		t.Fatal("the kept version restored from the bucket differs from the push")
	}
}
