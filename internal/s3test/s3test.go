// Package s3test starts a real S3 server for tests: versitygw (the
// gateway serving a directory over the S3 API, posix backend) on a random
// loopback port, with fixed test credentials, stopped when the test ends.
//
// The binary is github.com/versity/versitygw/cmd/versitygw at Version,
// installed by scripts/deps.sh. It is looked up as $NTC_VERSITYGW, then on
// PATH, then in $GOBIN and $GOPATH/bin (where go install puts it). Tests
// skip, saying how to install it, only when it is in none of these places.
//
// To run the same tests and benchmarks against another S3 server (MinIO,
// SeaweedFS, Ceph RGW, AWS...), name it in the environment:
// NTC_S3TEST_ENDPOINT (its URL), NTC_S3TEST_ACCESS_KEY,
// NTC_S3TEST_SECRET_KEY and optionally NTC_S3TEST_REGION. Every test then
// creates its own buckets there (ntc-test-…) and removes them at its end.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"go/build"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Version is the versitygw release the tests are written against.
const Version = "v1.8.0"

// Test credentials of versitygw's root account.
const (
	accessKey = "ntc-test-access"
	secretKey = "ntc-test-secret-key-0123456789"
	region    = "us-east-1"
)

// Server is a running S3 server.
type Server struct {
	// Endpoint is its URL: http://127.0.0.1:PORT for versitygw.
	Endpoint string
	// AccessKey, SecretKey and Region are what to sign requests with.
	AccessKey, SecretKey, Region string

	run     string // names this test's buckets apart from others'
	buckets atomic.Int64
}

// Credentials returns the server's credentials as the SDK takes them.
func (s *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, "")
}

// Binary returns the path of the versitygw binary, or "" if there is none.
func Binary() string {
	if p := os.Getenv("NTC_VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	dirs := []string{os.Getenv("GOBIN")}
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Start starts a versitygw serving a fresh temporary directory on
// 127.0.0.1 and stops it when the test ends, or returns the server the
// environment names (NTC_S3TEST_ENDPOINT). It skips the test if there is
// neither.
func Start(t testing.TB) *Server {
	t.Helper()
	run := fmt.Sprintf("%08x", rand.Uint32())
	if ep := os.Getenv("NTC_S3TEST_ENDPOINT"); ep != "" {
		s := &Server{Endpoint: ep, AccessKey: os.Getenv("NTC_S3TEST_ACCESS_KEY"),
			SecretKey: os.Getenv("NTC_S3TEST_SECRET_KEY"), Region: os.Getenv("NTC_S3TEST_REGION"), run: run}
		if s.Region == "" {
			s.Region = region
		}
		return s
	}
	bin := Binary()
	if bin == "" {
		t.Skipf("versitygw not found (PATH, $GOBIN, $GOPATH/bin, $NTC_VERSITYGW): run scripts/deps.sh, or go install github.com/versity/versitygw/cmd/versitygw@%s", Version)
	}
	dir := t.TempDir()
	// A port picked by the kernel, then handed to the server: another
	// process may take it in between, so a failed start is tried again.
	var lastErr error
	for range 3 {
		s, err := start(t, bin, dir)
		if err == nil {
			s.run = run
			return s
		}
		lastErr = err
	}
	t.Fatalf("start versitygw: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var out syncBuffer
	cmd := exec.Command(bin, "--port", addr, "--access", accessKey, "--secret", secretKey,
		"--region", region, "--quiet", "posix", dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	// Only the variables it needs: nothing of the test's AWS settings.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	s := &Server{Endpoint: "http://" + addr, AccessKey: accessKey, SecretKey: secretKey, Region: region}
	if err := s.awaitReady(exited); err != nil {
		stop()
		return nil, fmt.Errorf("%w; its output: %s", err, out.String())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", out.String())
		}
	})
	return s, nil
}

// awaitReady waits until the server answers an S3 request, it exits, or
// 30 s pass.
func (s *Server) awaitReady(exited <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := s.Client()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := cli.ListBuckets(ctx, &s3.ListBucketsInput{})
		if err == nil {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("versitygw did not answer in 30 s: %w", err)
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Client returns an S3 client of the server's root account, path-style.
// transport, if not nil, carries its requests.
func (s *Server) Client(transport ...http.RoundTripper) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       s.Region,
		Credentials:  s.Credentials(),
		UsePathStyle: true,
		HTTPClient:   httpClient(transport),
		// Retries hide nothing here: a loopback server either answers or
		// the test should see why not.
		RetryMaxAttempts: 1,
	})
}

func httpClient(transport []http.RoundTripper) *http.Client {
	if len(transport) > 0 && transport[0] != nil {
		return &http.Client{Transport: transport[0]}
	}
	return &http.Client{}
}

// NewBucket creates an empty bucket, removed with what it holds when the
// test ends, and returns its name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("ntc-test-%s-%d", s.run, s.buckets.Add(1))
	cli := s.Client()
	if _, err := cli.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := removeBucket(context.Background(), cli, name); err != nil {
			t.Errorf("remove test bucket: %v", err)
		}
	})
	return name
}

// removeBucket removes a bucket and every object in it.
func removeBucket(ctx context.Context, cli *s3.Client, name string) error {
	p := s3.NewListObjectsV2Paginator(cli, &s3.ListObjectsV2Input{Bucket: aws.String(name)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s: %w", name, err)
		}
		for _, o := range page.Contents {
			if _, err := cli.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(name), Key: o.Key}); err != nil {
				return fmt.Errorf("delete %s/%s: %w", name, aws.ToString(o.Key), err)
			}
		}
	}
	if _, err := cli.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("delete bucket %s: %w", name, err)
	}
	return nil
}

// Corrupt flips bits of the byte at off of an object, behind the back of
// whoever wrote it.
func (s *Server) Corrupt(t testing.TB, bucket, key string, off int64) {
	t.Helper()
	cli := s.Client()
	out, err := cli.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("corrupt %s: %v", key, err)
	}
	b, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || off >= int64(len(b)) {
		t.Fatalf("corrupt %s at %d: %d bytes, %v", key, off, len(b), err)
	}
	b[off] ^= 0x40
	if _, err := cli.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(b)}); err != nil {
		t.Fatalf("corrupt %s: %v", key, err)
	}
}

// Counter is an http.RoundTripper that counts the requests it carries by
// method (GET, PUT, HEAD, DELETE...).
type Counter struct {
	Next http.RoundTripper // nil: http.DefaultTransport

	mu sync.Mutex
	n  map[string]int
}

// RoundTrip counts req and carries it.
func (c *Counter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[req.Method]++
	c.mu.Unlock()
	next := c.Next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(req)
}

// Count returns how many requests of method were carried.
func (c *Counter) Count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

// Total returns how many requests were carried.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for the server's two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 {
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
