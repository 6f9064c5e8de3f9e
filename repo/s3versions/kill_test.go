package s3versions

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/chunk/s3store"
	"github.com/ntc-project/ntc/internal/s3test"
)

// The killed receiver: a child process (this test binary, running
// TestKilledCommitChild) commits a first version, then commits a second
// and hangs at a chosen point of that commit, where the test kills it
// with SIGKILL.
const (
	commitChildEnv   = "NTC_S3VERSIONS_CHILD"
	stageObjects     = "objects" // the index written, the record half sent
	stageHead        = "head"    // every object written, the head's swap half sent
	childCommitted   = "committed"
	childHanging     = "hanging"
	killedSeedFirst  = 50
	killedSeedSecond = 51
)

func TestKilledCommit(t *testing.T) {
	for _, stage := range []string{stageObjects, stageHead} {
		t.Run(stage, func(t *testing.T) {
			b := newBed(t)
			runCommitChild(t, b, stage)

			// No half version: the head lists the first version only, whole.
			r := b.receiver(t)
			h := head(t, r, "vm")
			first := content(killedSeedFirst, 3)
			v1 := version(t, "vm", chunk.ID{}, "1", first)
			if len(h.Versions) != 1 || h.Current != 1 || h.Versions[0].Digest != v1.Digest {
				t.Fatalf("after the kill: %d versions, current %d; want the first only", len(h.Versions), h.Current)
			}
			checkVersion(t, r, "vm", h.Versions[0], v1, first)

			// Another receiver commits the second version from that head.
			second := content(killedSeedSecond, 3)
			v2 := version(t, "vm", v1.Digest, "2", second)
			store(t, r, second)
			if _, err := r.Commit(t.Context(), h, v2, CommitOptions{MakeCurrent: true}); err != nil {
				t.Fatal(err)
			}
			// The killed attempt's objects are left to a collection.
			tick(t, r)
			st, err := r.Collect(t.Context(), CollectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := 2 // index and meta
			if stage == stageHead {
				want = 3 // and the record
			}
			if st.BlobsDeleted != want || st.Versions != 2 {
				t.Fatalf("collection: %+v; want the killed attempt's %d objects deleted, 2 versions kept", st, want)
			}
			h = head(t, b.receiver(t), "vm")
			e, ok := h.ByDigest(v2.Digest)
			if !ok || h.Current != e.Seq {
				t.Fatalf("second version not current: %+v", h)
			}
			checkVersion(t, b.receiver(t), "vm", e, v2, second)
		})
	}
}

// runCommitChild starts the child, waits for it to hang at stage, and
// kills it.
func runCommitChild(t *testing.T, b *bed, stage string) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestKilledCommitChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), commitChildEnv+"=1", "NTC_S3V_URL="+b.cfg.URL, "NTC_S3V_STAGE="+stage,
		"NTC_S3V_ENDPOINT="+b.srv.Endpoint, "NTC_S3V_REGION="+b.srv.Region,
		"NTC_S3V_ACCESS_KEY="+b.srv.AccessKey, "NTC_S3V_SECRET_KEY="+b.srv.SecretKey)
	cmd.Stderr = os.Stderr
	seen := s3test.KillWhenHanging(t, cmd, childHanging)
	if !strings.Contains(strings.Join(seen, "\n"), childCommitted) {
		t.Fatalf("the receiver hung before committing its first version: %q", seen)
	}
}

func TestKilledCommitChild(t *testing.T) {
	if os.Getenv(commitChildEnv) == "" {
		t.Skip("the child of TestKilledCommit")
	}
	stage := os.Getenv("NTC_S3V_STAGE")
	hang := &s3test.Hanger{Marker: childHanging, Match: func(path string) (hang, half bool) {
		if stage == stageObjects {
			return strings.HasSuffix(path, "/record"), true
		}
		return strings.HasSuffix(path, "/refs/sets/vm/head"), true
	}}
	st, err := s3store.Open(t.Context(), s3store.Config{
		URL: os.Getenv("NTC_S3V_URL"), Endpoint: os.Getenv("NTC_S3V_ENDPOINT"), PathStyle: true,
		Region:      os.Getenv("NTC_S3V_REGION"),
		Credentials: credentials.NewStaticCredentialsProvider(os.Getenv("NTC_S3V_ACCESS_KEY"), os.Getenv("NTC_S3V_SECRET_KEY"), ""),
		Transport:   hang,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := New(st)
	first := content(killedSeedFirst, 3)
	store(t, s, first)
	v1 := version(t, "vm", chunk.ID{}, "1", first)
	if _, err := s.Commit(t.Context(), head(t, s, "vm"), v1, CommitOptions{MakeCurrent: true}); err != nil {
		t.Fatal(err)
	}
	fmt.Println(childCommitted)
	second := content(killedSeedSecond, 3)
	store(t, s, second)
	if err := st.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	hang.Arm()
	s.Commit(t.Context(), head(t, s, "vm"), version(t, "vm", v1.Digest, "2", second), CommitOptions{MakeCurrent: true})
	t.Fatal("the commit did not hang")
}
