package s3test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// Killing a writer at a chosen point: the test runs a child process (its
// own binary, running one test) whose HTTP transport hangs at that point
// after printing a marker line; KillWhenHanging waits for the line and
// kills the child with SIGKILL.

// KillWhenHanging starts cmd, waits until it prints a line containing
// marker on stdout, kills it, and returns the lines it printed before.
// A child that ends without printing it fails the test.
func KillWhenHanging(t testing.TB, cmd *exec.Cmd, marker string) []string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.Contains(sc.Text(), marker) {
		seen = append(seen, sc.Text())
	}
	if !strings.Contains(sc.Text(), marker) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the child ended without printing %q: %q", marker, seen)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, out)
	cmd.Wait()
	return seen
}

// HalfThenHang returns a request body that sends the first n bytes of r,
// then prints marker on stdout and hangs until the process is killed.
func HalfThenHang(r io.ReadCloser, n int64, marker string) io.ReadCloser {
	return &halfBody{r: r, left: n, marker: marker}
}

type halfBody struct {
	r      io.ReadCloser
	left   int64
	marker string
}

func (b *halfBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		fmt.Println(b.marker)
		select {}
	}
	n, err := b.r.Read(p[:min(int64(len(p)), b.left)])
	b.left -= int64(n)
	return n, err
}

func (b *halfBody) Close() error { return b.r.Close() }

// Hanger is an http.RoundTripper that, once armed, hangs the PUTs Match
// picks: before sending anything, or after half the body (half), printing
// Marker on stdout first. Other requests pass.
type Hanger struct {
	Match  func(path string) (hang, half bool)
	Marker string
	armed  atomic.Bool
}

// Arm makes the hanger hang from now on.
func (h *Hanger) Arm() { h.armed.Store(true) }

// RoundTrip carries req, or hangs it.
func (h *Hanger) RoundTrip(req *http.Request) (*http.Response, error) {
	if h.armed.Load() && req.Method == http.MethodPut {
		switch hang, half := h.Match(req.URL.Path); {
		case hang && half:
			req.Body = HalfThenHang(req.Body, req.ContentLength/2, h.Marker)
		case hang:
			fmt.Println(h.Marker)
			select {}
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}
