package link

// The test binary doubles as the programs that run inside the namespaces:
// run with helperEnv=1, it performs one of the jobs below and exits. Each
// prints its result as one JSON line on stdout; servers first print the port
// they listen on.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

const helperEnv = "NTC_LINK_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		if err := helperMain(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// transfer is what a receiving helper saw: bytes (or datagrams) and the time
// from the first to the last of them (for TCP, from the first after the
// bytes skipped as warm-up).
type transfer struct {
	Packets int64         `json:"packets,omitempty"`
	Bytes   int64         `json:"bytes"`
	Span    time.Duration `json:"span"`
}

func helperMain(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: JOB ADDR [ARGS]: %q", args)
	}
	job, addr, rest := args[0], args[1], args[2:]
	num := func(i int) int64 {
		n, _ := strconv.ParseInt(rest[i], 10, 64)
		return n
	}
	out := json.NewEncoder(os.Stdout)
	switch job {
	case "tcp-serve":
		var skip int64
		if len(rest) > 0 {
			skip = num(0)
		}
		return tcpServe(addr, skip, out)
	case "tcp-connect":
		var ds []time.Duration
		for range num(0) {
			start := time.Now()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			ds = append(ds, time.Since(start))
			c.Close()
		}
		return out.Encode(ds)
	case "tcp-send":
		return tcpSend(addr, num(0))
	case "udp-serve":
		return udpServe(addr, time.Duration(num(0)), out)
	case "udp-send":
		return udpSend(addr, num(0), int(num(1)), BitRate(num(2)))
	}
	return fmt.Errorf("unknown job %q", job)
}

// tcpServe accepts connections on host:0, reads each to its end, answers
// one byte and reports what it read after the first skip bytes.
func tcpServe(host string, skip int64, out *json.Encoder) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		var tr transfer
		var first time.Time
		var seen int64
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			seen += int64(n)
			if n > 0 && seen > skip {
				if tr.Bytes == 0 {
					first = time.Now()
				} else {
					tr.Span = time.Since(first)
				}
				tr.Bytes += int64(n)
			}
			if err != nil {
				break
			}
		}
		c.Write([]byte{1})
		c.Close()
		if seen > 0 {
			if err := out.Encode(tr); err != nil {
				return err
			}
		}
	}
}

// tcpSend sends n bytes and waits until the receiver has read them all.
func tcpSend(addr string, n int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.CopyN(c, zeros{}, n); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	_, err = io.ReadAll(c)
	return err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// udpServe counts datagrams on host:0 until none came for idle (or for
// 10 s before the first).
func udpServe(host string, idle time.Duration, out *json.Encoder) error {
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	c.(*net.UDPConn).SetReadBuffer(4 << 20)
	fmt.Println(c.LocalAddr().(*net.UDPAddr).Port)
	var tr transfer
	var first time.Time
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // for the first datagram
	for {
		n, _, err := c.ReadFrom(buf)
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return out.Encode(tr)
		}
		if err != nil {
			return err
		}
		if tr.Packets == 0 {
			first = time.Now()
		}
		tr.Span = time.Since(first)
		tr.Packets++
		tr.Bytes += int64(n)
		c.SetReadDeadline(time.Now().Add(idle))
	}
}

// udpSend sends count datagrams of size bytes at rate (IP bytes, headers
// included; 0 sends as fast as it can).
func udpSend(addr string, count int64, size int, rate BitRate) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, size)
	wire := float64((size + 28) * 8)
	start := time.Now()
	for i := int64(0); i < count; i++ {
		if rate > 0 {
			if ahead := time.Duration(float64(i)*wire/float64(rate)*1e9) - time.Since(start); ahead > time.Millisecond {
				time.Sleep(ahead)
			}
		}
		c.Write(buf) // a full socket buffer drops the datagram, as a busy link would
	}
	return nil
}

// helper is a helper process running in an endpoint.
type helper struct {
	cmd *exec.Cmd
	out *bufio.Scanner
}

func helperCmd(ctx context.Context, ep Endpoint, args ...string) *exec.Cmd {
	c := ep.Command(ctx, os.Args[0], args...)
	c.Env = append(os.Environ(), helperEnv+"=1")
	c.Stderr = os.Stderr
	return c
}

// startServer starts a server job in ep and returns it with the address it
// listens on.
func startServer(t testing.TB, ep Endpoint, args ...string) (*helper, string) {
	t.Helper()
	c := helperCmd(t.Context(), ep, append([]string{args[0], ep.Addr.String()}, args[1:]...)...)
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	h := &helper{cmd: c, out: bufio.NewScanner(stdout)}
	if !h.out.Scan() {
		t.Fatalf("%s did not start: %v", args[0], h.out.Err())
	}
	return h, net.JoinHostPort(ep.Addr.String(), h.out.Text())
}

// next decodes the server's next result line into v.
func (h *helper) next(t testing.TB, v any) {
	t.Helper()
	if !h.out.Scan() {
		t.Fatalf("no result from server: %v", h.out.Err())
	}
	if err := json.Unmarshal(h.out.Bytes(), v); err != nil {
		t.Fatalf("server result %q: %v", h.out.Text(), err)
	}
}

// run runs a client job in ep to its end and decodes its output into v
// (if v is not nil).
func run(t testing.TB, ep Endpoint, v any, args ...string) {
	t.Helper()
	out, err := helperCmd(t.Context(), ep, args...).Output()
	if err != nil {
		t.Fatalf("%v in %s: %v", args, ep.Namespace, err)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatalf("%v: output %q: %v", args, out, err)
		}
	}
}
