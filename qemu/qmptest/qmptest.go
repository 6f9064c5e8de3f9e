// Package qmptest serves QMP for tests: a fake QEMU monitor on a unix
// socket that greets as QEMU 7.2.22, accepts qmp_capabilities and answers
// every other command with what a Handler returns. It is for tests only;
// nothing the ntc binary links imports it.
package qmptest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Greeting is the line Serve greets with.
const Greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`

// Request is one command a client sent.
type Request struct {
	Command string
	Args    json.RawMessage
	// Files came with the command (SCM_RIGHTS, as getfd passes them); the
	// handler owns them.
	Files []*os.File
	// Send writes a line to the client at any time, for events that come
	// after the reply.
	Send func(line string)
}

// Handler answers one command: the lines to send (events, then the
// reply), "" lines skipped (so []string{""} sends nothing and the client
// waits), or nil to hang up.
type Handler func(r Request) []string

// Serve accepts connections on l, serving each with h, until l is closed.
func Serve(l net.Listener, h Handler) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go serveConn(c, h)
	}
}

func serveConn(c net.Conn, h Handler) {
	defer c.Close()
	var mu sync.Mutex // one line at a time
	send := func(l string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(c, l)
	}
	send(Greeting)
	r := &rightsReader{c: c}
	dec := json.NewDecoder(r) // QEMU does not need a newline after a command
	for {
		var cmd struct {
			Execute string          `json:"execute"`
			Args    json.RawMessage `json:"arguments"`
		}
		if err := dec.Decode(&cmd); err != nil {
			return
		}
		files := r.files
		r.files = nil
		if cmd.Execute == "qmp_capabilities" {
			send(`{"return": {}}`)
			continue
		}
		out := h(Request{Command: cmd.Execute, Args: cmd.Args, Files: files, Send: send})
		if out == nil {
			return // hang up
		}
		for _, l := range out {
			if l != "" {
				send(l)
			}
		}
	}
}

// rightsReader reads a connection and keeps the descriptors that come
// with the bytes (on a unix socket).
type rightsReader struct {
	c     net.Conn
	files []*os.File
}

func (r *rightsReader) Read(p []byte) (int, error) {
	uc, ok := r.c.(*net.UnixConn)
	if !ok {
		return r.c.Read(p)
	}
	oob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(p, oob)
	if err != nil {
		return 0, err
	}
	if n == 0 && oobn == 0 {
		return 0, io.EOF // recvmsg's 0: the client hung up
	}
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for i := range msgs {
			fds, _ := unix.ParseUnixRights(&msgs[i])
			for _, fd := range fds {
				r.files = append(r.files, os.NewFile(uintptr(fd), "qmp-passed"))
			}
		}
	}
	return n, err
}

// Start serves h on a unix socket in a new directory (under the system's
// temporary directory: socket paths must stay short) and returns the
// socket's path. The listener and the directory go at the test's end.
func Start(t testing.TB, h Handler) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ntcq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go Serve(l, h)
	return path
}
