// Package s3test starts a real S3 server for tests: versitygw (the
// gateway serving a directory over the S3 API, posix backend) on a random
// loopback port, with fixed test credentials, stopped when the test ends.
//
// The binary is github.com/versity/versitygw/cmd/versitygw at Version,
// installed by scripts/deps.sh. It is looked up as $NTC_VERSITYGW, then on
// PATH, then in $GOBIN and $GOPATH/bin (where go install puts it). Tests
// skip, saying how to install it, only when it is in none of these places.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"go/build"
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

// Test credentials of the server's root account.
const (
	AccessKey = "ntc-test-access"
	SecretKey = "ntc-test-secret-key-0123456789"
	Region    = "us-east-1"
)

// Server is a running versitygw.
type Server struct {
	// Endpoint is its URL, http://127.0.0.1:PORT.
	Endpoint string
	// Dir is the directory it serves: DIR/BUCKET/KEY is an object's file.
	Dir string

	buckets atomic.Int64
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
// 127.0.0.1 and stops it when the test ends. It skips the test if the
// binary is absent.
func Start(t testing.TB) *Server {
	t.Helper()
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
	cmd := exec.Command(bin, "--port", addr, "--access", AccessKey, "--secret", SecretKey,
		"--region", Region, "--quiet", "posix", dir)
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
	s := &Server{Endpoint: "http://" + addr, Dir: dir}
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
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
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

// NewBucket creates an empty bucket and returns its name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("ntc-test-%d", s.buckets.Add(1))
	if _, err := s.Client().CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// ObjectPath returns the file that holds an object (posix backend).
func (s *Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.Dir, bucket, filepath.FromSlash(key))
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
