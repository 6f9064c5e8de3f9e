package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ntc-project/ntc/internal/s3test"
)

// BenchmarkUploadPull moves one incompressible image three ways, each by a
// real ntc process, in the same run: pushed to a receiver on loopback
// (ntc push → ntc serve: the local push, the baseline), uploaded from that
// receiver's repository to a bucket (ntc upload, versitygw on loopback),
// then pulled from the bucket into a new repository (ntc pull, images
// materialised). It reports each one's MB/s, upload and pull as fractions
// of the push (also without the push's indexing), and the bytes of chunks a puller fetched per image byte.
func BenchmarkUploadPull(b *testing.B) {
	const size = 128 << 20
	srv := s3test.Start(b)
	bucket := srv.NewBucket(b)
	office, home := newNode(b), newNode(b)
	store := b.TempDir()
	addr := benchServe(b, home, store, office.id)
	var push, up, pull, indexing time.Duration
	var pulled int64
	n := 0
	for b.Loop() {
		n++
		b.StopTimer()
		name := fmt.Sprintf("disk%d.img", n)
		img := filepath.Join(b.TempDir(), name)
		benchImage(b, img, size, uint64(n))
		b.StartTimer()

		t0 := time.Now()
		c := office.cmd(b.Context(), "--json", "push", "--to", addr, "--peer", home.id, img)
		out, err := c.Output()
		var pr pushJSON
		if err != nil || json.Unmarshal(out, &pr) != nil {
			b.Fatalf("push: %v\n%s", err, out)
		}
		push += time.Since(t0)
		indexing += time.Duration(pr.IndexMS) * time.Millisecond

		url := fmt.Sprintf("s3://%s/run%d", bucket, n)
		t0 = time.Now()
		if _, err := ntcS3(b, srv, office.home, "upload", name, "--to", url, "--store", store); err != nil {
			b.Fatal(err)
		}
		up += time.Since(t0)

		t0 = time.Now()
		res, err := ntcS3(b, srv, home.home, "pull", name, "--from", url, "--store", b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		pull += time.Since(t0)
		pulled += res.CopiedBytes
	}
	mbs := func(d time.Duration) float64 { return float64(n) * size / d.Seconds() / 1e6 }
	b.ReportMetric(mbs(push), "push-MB/s")
	b.ReportMetric(mbs(up), "upload-MB/s")
	b.ReportMetric(mbs(pull), "pull-MB/s")
	b.ReportMetric(push.Seconds()/up.Seconds(), "upload/push")
	b.ReportMetric(push.Seconds()/pull.Seconds(), "pull/push")
	// The push also indexes the image file; upload and pull start from
	// indexes: the push without its indexing is the fairer baseline.
	b.ReportMetric((push-indexing).Seconds()/up.Seconds(), "upload/push-sans-index")
	b.ReportMetric((push-indexing).Seconds()/pull.Seconds(), "pull/push-sans-index")
	b.ReportMetric(float64(pulled)/float64(n)/size, "pulled-B/B")
}

func benchImage(b *testing.B, path string, size int, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 9))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
}

// benchServe starts 'ntc serve' on loopback for a benchmark and returns
// its address.
func benchServe(b *testing.B, n node, store string, allow string) string {
	c := n.cmd(b.Context(), serveArgs(store, nil, []string{allow})...)
	stdout, err := c.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var ev listeningJSON
	if err != nil || json.Unmarshal([]byte(line), &ev) != nil {
		b.Fatalf("serve printed %q: %v\n%s", line, err, stderr.String())
	}
	return ev.Addr
}
