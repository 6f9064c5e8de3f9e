// Package qmptest serves QMP for tests: a fake QEMU monitor on a unix
// socket that greets as QEMU 7.2.22, accepts qmp_capabilities and answers
// every other command with what a Handler returns. It is for tests only;
// nothing the ntc binary links imports it.
package qmptest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// Greeting is the line Serve greets with.
const Greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`

// Handler answers one command: the lines to send (events, then the
// reply), "" lines skipped (so []string{""} sends nothing and the client
// waits), or nil to hang up.
type Handler func(cmd string, args json.RawMessage) []string

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
	fmt.Fprintln(c, Greeting)
	dec := json.NewDecoder(c) // QEMU does not need a newline after a command
	for {
		var cmd struct {
			Execute string          `json:"execute"`
			Args    json.RawMessage `json:"arguments"`
		}
		if err := dec.Decode(&cmd); err != nil {
			return
		}
		if cmd.Execute == "qmp_capabilities" {
			fmt.Fprintln(c, `{"return": {}}`)
			continue
		}
		out := h(cmd.Execute, cmd.Args)
		if out == nil {
			return // hang up
		}
		for _, l := range out {
			if l != "" {
				fmt.Fprintln(c, l)
			}
		}
	}
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
