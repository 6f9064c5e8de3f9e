package s3store

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ntc-project/ntc/internal/s3test"
)

// The killed writer: a child process (this test binary, running
// TestKilledWriterChild) stores a first batch and syncs it, then starts
// storing a second and hangs at a chosen point of the upload, where the
// test kills it with SIGKILL.
const (
	childEnv         = "NTC_S3STORE_CHILD"
	childPackSize    = 64 << 10
	stageInPack      = "pack"    // half of the pack's body sent
	stageAfterPack   = "listing" // the pack stored, its listing not sent
	markerCommitted  = "committed"
	markerHanging    = "hanging"
	firstSeed        = 20
	secondSeed       = 21
	batchLen, chSize = 6, 16 << 10
)

func TestKilledWriter(t *testing.T) {
	for _, stage := range []string{stageInPack, stageAfterPack} {
		t.Run(stage, func(t *testing.T) {
			tb := newTestBed(t)
			cfg := tb.config()
			cfg.PackSize = childPackSize
			runKilledChild(t, tb, cfg, stage)

			r := tb.open(t, cfg)
			checkAll(t, r, randomChunks(firstSeed, batchLen, chSize), true)
			second := randomChunks(secondSeed, batchLen, chSize)
			checkAll(t, r, second, false)
			objects := countObjects(t, r, "packs/")
			orphans := 0
			if stage == stageAfterPack {
				orphans = 1
			}
			if objects != r.Packs()+orphans {
				t.Fatalf("%d pack objects for %d listed packs: want %d not listed", objects, r.Packs(), orphans)
			}

			// Storing the second batch again works. An orphan the killed
			// writer left is not adopted (a store believes only in packs
			// it created or read a listing of, gc.go): the same chunks go
			// into a salted pack beside it, and it stays unlisted.
			w := tb.open(t, cfg)
			putAll(t, w, second)
			if err := w.Sync(t.Context()); err != nil {
				t.Fatal(err)
			}
			checkAll(t, tb.open(t, cfg), second, true)
			if got, want := countObjects(t, w, "packs/"), w.Packs()+orphans; got != want {
				t.Fatalf("%d pack objects for %d listed packs after the second batch was stored again, want %d unlisted", got, w.Packs(), orphans)
			}
		})
	}
}

// runKilledChild starts the child, waits for it to hang at stage, and
// kills it.
func runKilledChild(t *testing.T, tb *testBed, cfg Config, stage string) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestKilledWriterChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NTC_S3STORE_URL="+cfg.URL, "NTC_S3STORE_STAGE="+stage,
		"NTC_S3STORE_ENDPOINT="+tb.srv.Endpoint, "NTC_S3STORE_REGION="+tb.srv.Region,
		"NTC_S3STORE_ACCESS_KEY="+tb.srv.AccessKey, "NTC_S3STORE_SECRET_KEY="+tb.srv.SecretKey)
	cmd.Stderr = os.Stderr
	seen := s3test.KillWhenHanging(t, cmd, markerHanging)
	if !strings.Contains(strings.Join(seen, "\n"), markerCommitted) {
		t.Fatalf("the writer hung before committing its first batch: %q", seen)
	}
}

// countObjects counts the objects under dir in s's prefix.
func countObjects(t testing.TB, s *Store, dir string) int {
	t.Helper()
	n := 0
	if err := s.b.list(t.Context(), dir, func(object) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestKilledWriterChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("the child of TestKilledWriter")
	}
	stage := os.Getenv("NTC_S3STORE_STAGE")
	hang := &s3test.Hanger{Marker: markerHanging, Match: func(path string) (hang, half bool) {
		switch stage {
		case stageInPack:
			return strings.Contains(path, "/packs/"), true
		default: // stageAfterPack
			return strings.Contains(path, "/index/"), false
		}
	}}
	s, err := Open(t.Context(), Config{
		URL: os.Getenv("NTC_S3STORE_URL"), Endpoint: os.Getenv("NTC_S3STORE_ENDPOINT"), PathStyle: true,
		Region:      os.Getenv("NTC_S3STORE_REGION"),
		Credentials: credentials.NewStaticCredentialsProvider(os.Getenv("NTC_S3STORE_ACCESS_KEY"), os.Getenv("NTC_S3STORE_SECRET_KEY"), ""),
		PackSize:    childPackSize, Transport: hang,
	})
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, s, randomChunks(firstSeed, batchLen, chSize))
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	fmt.Println(markerCommitted)
	hang.Arm()
	putAll(t, s, randomChunks(secondSeed, batchLen, chSize))
	s.Sync(t.Context())
	t.Fatal("the upload did not hang")
}
