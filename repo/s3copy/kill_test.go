package s3copy

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/s3test"
	"github.com/ntc-project/ntc/repo"
	"github.com/ntc-project/ntc/repo/s3versions"
)

// The killed copier: a child process (this test binary, running
// TestKilledChild) uploads or pulls and hangs at a chosen point, where the
// test kills it with SIGKILL.
const (
	childEnv     = "NTC_S3COPY_CHILD"
	childHanging = "hanging"
	childDone    = "first done"
)

// TestKilledUpload: an uploader killed while swapping the set's head (its
// chunks and objects written) leaves the bucket with the version before,
// whole; the upload done again commits the new one.
func TestKilledUpload(t *testing.T) {
	b := newBed(t)
	office := openRepo(t)
	ims := images(60, 2<<20, 512<<10)
	v1 := commitLocal(t, office, "vm", "office", repo.Digest{}, ims, nil)
	ims2, _ := change(ims, 61, 0.05)
	v2 := commitLocal(t, office, "vm", "office", v1.Digest, ims2, nil)
	runChild(t, b, "upload", office.Dir())

	sets := b.sets(t, nil)
	h, err := sets.Head(t.Context(), "vm")
	if err != nil {
		t.Fatal(err)
	}
	cur, ok := h.CurrentEntry()
	if !ok || len(h.Versions) != 1 || cur.Digest != chunk.ID(v1.Digest) {
		t.Fatalf("after the kill the bucket lists %d versions, current %s; want v1 only", len(h.Versions), cur.Digest.Short())
	}
	st, err := upload(t, office, sets, "vm", v2.Seq, Options{})
	if err != nil || !st.Current {
		t.Fatalf("upload again: %v, %+v", err, st)
	}
	home := openRepo(t)
	if _, err := download(t, sets, "vm", 0, home, Options{}); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, home, v2, ims2, nil)
}

// TestKilledPull: a puller killed while storing the chunks it downloads
// leaves its node without the version (the version before stays current);
// the pull done again completes it.
func TestKilledPull(t *testing.T) {
	b := newBed(t)
	sets := b.sets(t, nil)
	office, home := openRepo(t), openRepo(t)
	ims := images(70, 2<<20, 512<<10)
	v1 := commitLocal(t, office, "vm", "office", repo.Digest{}, ims, nil)
	if _, err := upload(t, office, sets, "vm", 0, Options{}); err != nil {
		t.Fatal(err)
	}
	ims2, _ := change(ims, 71, 0.2)
	v2 := commitLocal(t, office, "vm", "office", v1.Digest, ims2, nil)
	if _, err := upload(t, office, sets, "vm", 0, Options{}); err != nil {
		t.Fatal(err)
	}
	runChild(t, b, "pull", home.Dir())

	h, err := home.Head("vm")
	if err != nil || h == nil || h.Digest != v1.Digest {
		t.Fatalf("after the kill the node's head is %v (%v), want v1", h, err)
	}
	if seqs, err := home.Seqs("vm"); err != nil || len(seqs) != 1 {
		t.Fatalf("after the kill the node holds versions %v (%v), want v1 only", seqs, err)
	}
	if _, err := download(t, sets, "vm", 0, home, Options{}); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, home, v2, ims2, nil)
}

// runChild starts the child copying in direction with the node repository
// dir, waits for it to hang, and kills it.
func runChild(t *testing.T, b *bed, direction, dir string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestKilledChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+direction, "NTC_S3C_URL="+b.url, "NTC_S3C_DIR="+dir,
		"NTC_S3C_ENDPOINT="+b.srv.Endpoint, "NTC_S3C_REGION="+b.srv.Region,
		"NTC_S3C_ACCESS_KEY="+b.srv.AccessKey, "NTC_S3C_SECRET_KEY="+b.srv.SecretKey)
	cmd.Stderr = os.Stderr
	seen := s3test.KillWhenHanging(t, cmd, childHanging)
	if !strings.Contains(strings.Join(seen, "\n"), childDone) {
		t.Fatalf("the child hung before its first copy: %q", seen)
	}
}

func TestKilledChild(t *testing.T) {
	direction := os.Getenv(childEnv)
	if direction == "" {
		t.Skip("the child of TestKilledUpload and TestKilledPull")
	}
	hang := &s3test.Hanger{Marker: childHanging, Match: func(path string) (hang, half bool) {
		return strings.HasSuffix(path, "/refs/sets/vm/head"), true
	}}
	st, err := s3store.Open(t.Context(), s3store.Config{
		URL: os.Getenv("NTC_S3C_URL"), Endpoint: os.Getenv("NTC_S3C_ENDPOINT"), PathStyle: true,
		Region:      os.Getenv("NTC_S3C_REGION"),
		Credentials: credentials.NewStaticCredentialsProvider(os.Getenv("NTC_S3C_ACCESS_KEY"), os.Getenv("NTC_S3C_SECRET_KEY"), ""),
		Transport:   http.RoundTripper(hang),
	})
	if err != nil {
		t.Fatal(err)
	}
	sets := s3versions.New(st)
	r, err := repo.OpenExisting(os.Getenv("NTC_S3C_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	switch direction {
	case "upload":
		if _, err := upload(t, r, sets, "vm", 1, Options{}); err != nil {
			t.Fatal(err)
		}
		fmt.Println(childDone)
		hang.Arm()
		upload(t, r, sets, "vm", 2, Options{})
	case "pull":
		if _, err := download(t, sets, "vm", 1, r, Options{}); err != nil {
			t.Fatal(err)
		}
		fmt.Println(childDone)
		ps, err := r.OpenStore(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		Download(t.Context(), sets, "vm", 2, r, &hangAfter{chunkStore: ps, n: 20}, Options{})
	}
	t.Fatal("the copy did not hang")
}

// hangAfter stores n chunks, then prints the marker and hangs.
type hangAfter struct {
	chunkStore
	n int
}

func (h *hangAfter) PutVerified(ctx context.Context, id chunk.ID, data, zstd []byte, raw bool) error {
	if h.n--; h.n == 0 {
		if err := h.chunkStore.Sync(ctx); err != nil {
			return err
		}
		fmt.Println(childHanging)
		<-ctx.Done()
		return ctx.Err()
	}
	return h.chunkStore.PutVerified(ctx, id, data, zstd, raw)
}
