package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/chunk"
	"github.com/ntc-project/ntc/internal/s3test"
	"github.com/ntc-project/ntc/repo"
)

// s3Env is the environment that points the ntc binary at a test S3
// server, the standard AWS way.
func s3Env(srv *s3test.Server) []string {
	return []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_REGION=" + srv.Region, "AWS_ENDPOINT_URL=" + srv.Endpoint}
}

// ntcS3 runs ntc --json with args in home, against srv, and decodes what
// it printed.
func ntcS3(t testing.TB, srv *s3test.Server, home string, args ...string) (copiedJSON, error) {
	t.Helper()
	c := exec.CommandContext(t.Context(), ntcBin, append([]string{"--json"}, args...)...)
	c.Env = append(append(os.Environ(), "NTC_HOME="+home), s3Env(srv)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	var res copiedJSON
	if err != nil {
		return res, fmt.Errorf("ntc %s: %w: %s", args[0], err, stderr.String())
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ntc %s printed %q: %v", args[0], out, err)
	}
	return res, nil
}

// commitDisk commits a version of set with one image, disk, holding data,
// to the node repository in dir, as a checkpoint taken there would.
func commitDisk(t *testing.T, dir, set string, parent repo.Digest, data []byte) *repo.Version {
	t.Helper()
	ctx := t.Context()
	r, err := repo.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.OpenStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x, _, err := chunk.Build(ctx, chunk.Bytes(data), chunk.DefaultCDC(), chunk.Options{Chunk: func(e chunk.Entry, b []byte) error {
		return st.PutVerified(ctx, e.ID, b, nil, false)
	}})
	if err == nil {
		err = st.Sync(ctx)
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	v := &repo.Version{Set: set, Parent: parent, Node: "office", Created: time.Now().UTC(), Images: []repo.Image{{Name: "disk"}}}
	meta := []byte("manifest of " + set)
	if err := v.Seal([]*chunk.Index{x}, meta); err != nil {
		t.Fatal(err)
	}
	c, err := r.Commit(ctx, v, []*chunk.Index{x}, meta, repo.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Version
}

// TestUploadThenPull: the office uploads a version from its repository
// with 'ntc upload'; two homes 'ntc pull' it (one into $NTC_HOME/repo, one
// into --store) and hold its image as a file where 'ntc resume' reads it.
// After 1% changed, the upload and the pull carry the change only.
func TestUploadThenPull(t *testing.T) {
	srv := s3test.Start(t)
	url := "s3://" + srv.NewBucket(t) + "/office"
	officeHome, home1, home2 := t.TempDir(), t.TempDir(), t.TempDir()
	officeRepo := filepath.Join(t.TempDir(), "ckpt")
	data := make([]byte, 8<<20)
	r := rand.New(rand.NewPCG(5, 5))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	v1 := commitDisk(t, officeRepo, "vm", repo.Digest{}, data)

	up, err := ntcS3(t, srv, officeHome, "upload", "vm", "--to", url, "--store", officeRepo)
	if err != nil {
		t.Fatal(err)
	}
	if up.Digest != v1.Digest || !up.Current || up.Copied != up.Chunks || up.CopiedBytes != int64(len(data)) {
		t.Fatalf("upload: %+v; want every chunk of %s, current", up, v1.Digest.Short())
	}
	store2 := filepath.Join(t.TempDir(), "repo")
	for _, pull := range []struct {
		home, dir string
		args      []string
	}{
		{home1, filepath.Join(home1, "repo"), nil},
		{home2, store2, []string{"--store", store2}},
	} {
		got, err := ntcS3(t, srv, pull.home, append([]string{"pull", "vm", "--from", url}, pull.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != v1.Digest || !got.Current || got.Version != 1 || got.CopiedBytes != int64(len(data)) {
			t.Fatalf("pull: %+v", got)
		}
		checkImageFile(t, pull.dir, data)
	}

	// 1% changed: both directions carry the change only.
	var changed int64
	for _, slot := range r.Perm(128)[:2] {
		off := slot * 64 << 10
		for i := off; i < off+64<<10; i++ {
			data[i] = byte(r.Uint32())
		}
		changed += 64 << 10
	}
	v2 := commitDisk(t, officeRepo, "vm", v1.Digest, data)
	up, err = ntcS3(t, srv, officeHome, "upload", "vm", "--to", url, "--store", officeRepo)
	if err != nil {
		t.Fatal(err)
	}
	if up.Digest != v2.Digest || !up.Current || up.CopiedBytes < changed || up.CopiedBytes > 3*changed {
		t.Fatalf("upload after %d bytes changed: %+v", changed, up)
	}
	got, err := ntcS3(t, srv, home1, "pull", "vm", "--from", url)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != v2.Digest || !got.Current || got.Version != 2 || got.CopiedBytes != up.CopiedBytes {
		t.Fatalf("pull after the change: %+v; want the %d bytes uploaded", got, up.CopiedBytes)
	}
	checkImageFile(t, filepath.Join(home1, "repo"), data)
	out, err := exec.CommandContext(t.Context(), ntcBin, "ls", "--store", filepath.Join(home1, "repo")).Output()
	if err != nil || !strings.Contains(string(out), "current v2 "+v2.Digest.Short()) {
		t.Fatalf("ls after the pull: %s %v", out, err)
	}
}

func checkImageFile(t *testing.T, dir string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, "sets", "vm", "images", "disk"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the pulled image in %s differs from the uploaded one (%v)", dir, err)
	}
}

// TestPullMistakes: what a person gets wrong is a usage error, and a
// version the bucket does not hold is an error that changes nothing.
func TestPullMistakes(t *testing.T) {
	srv := s3test.Start(t)
	url := "s3://" + srv.NewBucket(t) + "/x"
	home := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pull", "vm"}, exitUsage, "--from"},
		{[]string{"pull", "vm", "--from", "/local/dir"}, exitUsage, "s3://BUCKET/PREFIX"},
		{[]string{"pull", "../etc", "--from", url}, exitUsage, "bad name"},
		{[]string{"upload", "vm"}, exitUsage, "--to"},
		{[]string{"pull", "vm", "--from", url}, exitError, "no current version"},
	} {
		c := exec.CommandContext(context.Background(), ntcBin, tc.args...)
		c.Env = append(append(os.Environ(), "NTC_HOME="+home), s3Env(srv)...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		err := c.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("ntc %s: %v, %q; want exit %d saying %q", strings.Join(tc.args, " "), err, stderr.String(), tc.code, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(home, "repo", "sets", "vm")); err == nil {
		t.Error("a failed pull made the set")
	}
}
