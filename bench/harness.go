package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/internal/procstat"
)

// Node is one ntc home directory (an identity) using the ntc binary Bin.
type Node struct {
	Bin  string
	Home string
	ID   string
}

// NewNode creates an identity in home.
func NewNode(ctx context.Context, bin, home string) (*Node, error) {
	n := &Node{Bin: bin, Home: home}
	out, err := n.Command(ctx, "init").Output()
	if err != nil {
		return nil, fmt.Errorf("ntc init: %w", err)
	}
	n.ID = strings.TrimSpace(string(out))
	return n, nil
}

// Command runs ntc as this node.
func (n *Node) Command(ctx context.Context, args ...string) *exec.Cmd {
	return n.CommandIn(ctx, nil, args...)
}

// CommandIn runs ntc as this node through wrap (the command line that
// enters an endpoint's namespace, link.Endpoint.Wrap); nil: directly.
func (n *Node) CommandIn(ctx context.Context, wrap []string, args ...string) *exec.Cmd {
	argv := append(append(slices.Clone(wrap), n.Bin), args...)
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = append(os.Environ(), "NTC_HOME="+n.Home)
	return c
}

// Server is a running 'ntc serve'.
type Server struct {
	Addr   string
	cmd    *exec.Cmd
	stderr bytes.Buffer
}

// Serve starts 'ntc serve' on addr into store, allowing peer.
func (n *Node) Serve(ctx context.Context, addr, store string, allow string, wrap ...string) (*Server, error) {
	return n.ServeFlags(ctx, addr, store, allow, nil, wrap...)
}

// ServeFlags is Serve with more flags (--resume-allow, say).
func (n *Node) ServeFlags(ctx context.Context, addr, store string, allow string, flags []string, wrap ...string) (*Server, error) {
	args := append([]string{"--json", "serve", "--listen", addr, "--store", store, "--allow", allow}, flags...)
	c := n.CommandIn(ctx, wrap, args...)
	s := &Server{cmd: c}
	c.Stderr = &s.stderr
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		c.Process.Kill()
		c.Wait()
		return nil, fmt.Errorf("ntc serve did not start: %v: %s", err, s.stderr.String())
	}
	var ev struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		return nil, fmt.Errorf("ntc serve printed %q", line)
	}
	s.Addr = ev.Addr
	return s, nil
}

// Log returns what the server wrote to its standard error (its log).
// Read it after Stop.
func (s *Server) Log() string { return s.stderr.String() }

// Stop ends the server and returns its peak resident memory in bytes.
func (s *Server) Stop() (int64, error) {
	rss, _ := s.StopUsage()
	return rss, nil
}

// StopUsage ends the server and returns its peak resident memory and CPU.
func (s *Server) StopUsage() (int64, time.Duration) {
	hwm := procstat.PeakRSS(s.cmd.Process.Pid)
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	return hwm, cpuTime(s.cmd.ProcessState)
}

func maxRSS(ps *os.ProcessState) int64 {
	if ps == nil {
		return 0
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024
	}
	return 0
}

func cpuTime(ps *os.ProcessState) time.Duration {
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// PushResult is what 'ntc push --json' reports, plus the process's costs.
type PushResult struct {
	Version      uint64 `json:"version"`
	Digest       string `json:"digest"`
	ImageBytes   int64  `json:"image_bytes"`
	ChangedBytes int64  `json:"changed_bytes"`
	ChunksSent   int    `json:"chunks_sent"`
	ChunkBytes   int64  `json:"chunk_bytes"`
	DataBytes    int64  `json:"data_bytes"`
	BytesSent    int64  `json:"bytes_sent"`
	BytesUp      int64  `json:"bytes_up"`
	BytesDown    int64  `json:"bytes_down"`
	Patched      int    `json:"chunks_patched"`
	Grouped      int    `json:"chunks_grouped"`
	// Compressed is the chunk bytes compressed at each zstd level.
	Compressed map[string]int64 `json:"compressed"`
	BytesLost  int64            `json:"bytes_lost"`
	Packets    int64            `json:"packets_sent"`
	BytesRead  int64            `json:"bytes_read"`
	DurationMS int64            `json:"duration_ms"`
	IndexMS    int64            `json:"index_ms"`
	MaxRSS     int64            `json:"peak_rss"`
	Wall       time.Duration
	CPU        time.Duration
}

// Push runs 'ntc push' and returns its summary.
func (n *Node) Push(ctx context.Context, addr, peer string, args ...string) (*PushResult, error) {
	return n.PushVia(ctx, nil, addr, peer, args...)
}

// PushVia runs 'ntc push' under a wrapper command (a namespace).
func (n *Node) PushVia(ctx context.Context, wrap []string, addr, peer string, args ...string) (*PushResult, error) {
	c := n.CommandIn(ctx, wrap, append([]string{"--json", "push", "--to", addr, "--peer", peer}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	t0 := time.Now()
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("ntc push: %w: %s", err, stderr.String())
	}
	var r PushResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("ntc push printed %q", out)
	}
	r.Wall, r.CPU = time.Since(t0), cpuTime(c.ProcessState)
	if r.MaxRSS == 0 {
		r.MaxRSS = maxRSS(c.ProcessState)
	}
	return &r, nil
}

// Rsync is an rsync daemon serving one writable module.
type Rsync struct {
	Port int
	cmd  *exec.Cmd
	dir  string
}

// StartRsync starts an rsync daemon on 127.0.0.1:port (or inside a wrapper
// command such as 'ip netns exec NS') whose module "m" is dest.
func StartRsync(ctx context.Context, dir, dest, addr string, port int, wrap ...string) (*Rsync, error) {
	conf := filepath.Join(dir, "rsyncd.conf")
	text := fmt.Sprintf("use chroot = no\nuid = root\ngid = root\naddress = %s\nport = %d\npid file = %s\n[m]\npath = %s\nread only = no\n",
		addr, port, filepath.Join(dir, "rsyncd.pid"), dest)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	args := append(wrap, "rsync", "--daemon", "--no-detach", "--config", conf)
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	if err := c.Start(); err != nil {
		return nil, err
	}
	return &Rsync{Port: port, cmd: c, dir: dir}, nil
}

// Stop ends the daemon.
func (r *Rsync) Stop() { r.StopUsage() }

// StopUsage ends the daemon and returns its peak memory and the CPU it and
// its children used.
func (r *Rsync) StopUsage() (int64, time.Duration) {
	hwm := procstat.PeakRSS(r.cmd.Process.Pid)
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.cmd.Wait()
	return hwm, cpuTime(r.cmd.ProcessState)
}

// RsyncResult is what one rsync run cost.
type RsyncResult struct {
	BytesSent, BytesReceived int64
	Wall, CPU                time.Duration
	MaxRSS                   int64
}

var rsyncTotal = regexp.MustCompile(`Total bytes (sent|received): ([\d,]+)`)

// RunRsync copies src to rsync://addr:port/m/ with the given options and
// parses --stats. wrap runs the client elsewhere (a namespace).
func RunRsync(ctx context.Context, src, addr string, port int, opts []string, wrap ...string) (*RsyncResult, error) {
	mem, err := os.CreateTemp("", "ntc-bench-rss-")
	if err != nil {
		return nil, err
	}
	mem.Close()
	defer os.Remove(mem.Name())
	// GNU time reports the client's own peak memory, not counting what
	// this process shared with it before its exec.
	args := append(append(wrap, "/usr/bin/time", "-f", "%M", "-o", mem.Name(), "rsync"), opts...)
	args = append(args, "--stats", src, fmt.Sprintf("rsync://%s:%d/m/", addr, port))
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	t0 := time.Now()
	out, err := c.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("rsync: %w: %s", err, out)
	}
	r := &RsyncResult{Wall: time.Since(t0), CPU: cpuTime(c.ProcessState)}
	if b, err := os.ReadFile(mem.Name()); err == nil {
		kb, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		r.MaxRSS = kb << 10
	}
	for _, m := range rsyncTotal.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseInt(strings.ReplaceAll(m[2], ",", ""), 10, 64)
		if m[1] == "sent" {
			r.BytesSent = v
		} else {
			r.BytesReceived = v
		}
	}
	return r, nil
}
