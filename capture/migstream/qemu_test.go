package migstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ntc-project/ntc/qemu"
)

// These tests run QEMU 7.2 without a guest kernel: SeaBIOS runs for a moment
// so that RAM, ROMs and VGA memory hold data, then the guest is migrated to
// a socket the test reads.

const qemuBinary = "qemu-system-x86_64"

// qemuMachine is the machine of every QEMU the tests start: small, TCG, with
// a VGA card for a video RAM block and an option ROM.
var qemuMachine = []string{"-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-nographic", "-device", "VGA", "-S"}

// qemuVM is a running QEMU and its QMP session.
type qemuVM struct {
	tb  testing.TB
	out *lockedBuffer
	s   *qemu.Session
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startQEMU starts QEMU with qemuMachine plus extra arguments and connects
// to its QMP socket. It skips the test when QEMU is not installed.
func startQEMU(tb testing.TB, extra ...string) *qemuVM {
	tb.Helper()
	bin, err := exec.LookPath(qemuBinary)
	if err != nil {
		tb.Skipf("needs %s (QEMU 7.2), which is not installed: %v", qemuBinary, err)
	}
	sock := filepath.Join(tb.TempDir(), "qmp.sock")
	args := append(append([]string{}, qemuMachine...), "-qmp", "unix:"+sock+",server=on,wait=off")
	q := &qemuVM{tb: tb, out: &lockedBuffer{}}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = q.out, q.out
	child, err := qemu.StartChild(cmd)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if q.s != nil {
			q.s.Close()
		}
		child.Kill()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if q.s, err = qemu.DialStarting(ctx, sock, qemu.DialOptions{ConnectTimeout: 10 * time.Second}, child.Done()); err != nil {
		tb.Fatalf("%v; QEMU said: %s", err, q.out)
	}
	return q
}

// try runs a QMP command and returns its result or its error.
func (q *qemuVM) try(cmd string, args any) (json.RawMessage, error) {
	var r json.RawMessage
	if err := q.s.Run(context.Background(), cmd, args, &r); err != nil {
		return nil, fmt.Errorf("%w (QEMU said: %s)", err, q.out)
	}
	return r, nil
}

func (q *qemuVM) run(cmd string, args any) json.RawMessage {
	q.tb.Helper()
	r, err := q.try(cmd, args)
	if err != nil {
		q.tb.Fatal(err)
	}
	return r
}

func (q *qemuVM) status() string {
	q.tb.Helper()
	var st struct{ Status string }
	json.Unmarshal(q.run("query-status", nil), &st)
	return st.Status
}

// waitMigration polls query-migrate until the migration ends and returns
// its final status.
func (q *qemuVM) waitMigration() string {
	q.tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var m struct {
			Status    string
			ErrorDesc string `json:"error-desc"`
		}
		json.Unmarshal(q.run("query-migrate", nil), &m)
		switch m.Status {
		case "completed":
			return m.Status
		case "failed", "cancelled":
			q.tb.Fatalf("migration %s: %s (QEMU said: %s)", m.Status, m.ErrorDesc, q.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q.tb.Fatal("migration did not end within a minute")
	return ""
}

type captured struct {
	raw    []byte
	stream *Stream
	images memImages
}

// migrateOut migrates src to a unix socket that the test listens on, and
// parses the stream as it arrives.
func migrateOut(tb testing.TB, src *qemuVM, background bool) captured {
	tb.Helper()
	sock := filepath.Join(tb.TempDir(), "out.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	var c captured
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		var raw bytes.Buffer
		c.images = memImages{}
		c.stream, err = Parse(context.Background(), io.TeeReader(conn, &raw), c.images)
		c.raw = raw.Bytes()
		done <- err
	}()
	defer func() {
		ln.Close()
		<-done
	}()
	if background {
		src.run("migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{
			{"capability": "background-snapshot", "state": true}}})
	}
	src.run("migrate", map[string]any{"uri": "unix:" + sock})
	src.waitMigration()
	select {
	case err := <-done:
		done <- nil
		if err != nil {
			tb.Fatalf("parse the stream from QEMU: %v", err)
		}
	case <-time.After(30 * time.Second):
		tb.Fatal("the stream did not end after the migration completed")
	}
	return c
}

// restore starts a QEMU with the same machine, feeds it the stream that
// write produces over a unix socket, checks that its RAM now equals want by
// migrating it out again, and that the guest runs after cont.
func restore(tb testing.TB, write func(io.Writer) error, want memImages) {
	tb.Helper()
	dst := startQEMU(tb, "-incoming", "defer")
	sock := filepath.Join(tb.TempDir(), "in.sock")
	dst.run("migrate-incoming", map[string]any{"uri": "unix:" + sock})
	conn, err := net.Dial("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	werr := write(conn)
	if err := errors.Join(werr, conn.Close()); err != nil {
		tb.Fatalf("send the stream: %v (QEMU said: %s)", err, dst.out)
	}
	dst.waitMigration()
	if st := dst.status(); st != "paused" {
		tb.Errorf("restored guest is %q before cont, want paused", st)
	}
	if again := migrateOut(tb, dst, false); !equalImages(again.images, want) {
		tb.Error("the restored guest's RAM differs from the stream's")
	}
	dst.run("cont", nil)
	time.Sleep(200 * time.Millisecond)
	if st := dst.status(); st != "running" {
		tb.Errorf("restored guest is %q after cont, want running (QEMU said: %s)", st, dst.out)
	}
}

func TestQEMU(t *testing.T) {
	for _, tt := range []struct {
		mode       string
		background bool
		after      string      // run state of the source after the migration
		sections   SectionType // type of the last RAM section
	}{
		{"classic", false, "postmigrate", SectionEnd},
		// The background snapshot restarts the guest itself and has no END.
		{"background-snapshot", true, "running", SectionPart},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			src := startQEMU(t)
			src.run("cont", nil)
			time.Sleep(300 * time.Millisecond) // SeaBIOS initialises RAM and VGA
			src.run("stop", nil)
			c := migrateOut(t, src, tt.background)
			if st := src.status(); st != tt.after {
				t.Errorf("source is %q after the migration, want %q", st, tt.after)
			}
			s := c.stream
			t.Logf("%s: %d bytes, %d blocks, %d RAM sections, %+v, device state %d bytes, description %d bytes",
				tt.mode, len(c.raw), len(s.Blocks), len(s.Layout.Sections), s.Stats, len(s.Devices), len(s.Description))
			checkQEMUStream(t, s, tt.sections)

			// Byte for byte, and the same on a second parse.
			joined := joinBytes(t, s, memSource(c.images))
			if i := firstDiff(joined, c.raw); i >= 0 {
				t.Errorf("Join(Parse(stream)) differs from the stream at byte %d of %d/%d", i, len(joined), len(c.raw))
			}
			again, againImgs := parseBytes(t, joined)
			if !reflect.DeepEqual(again, s) || !equalImages(againImgs, c.images) {
				t.Error("Parse(Join(Parse(stream))) differs from Parse(stream)")
			}

			t.Run("restore joined stream", func(t *testing.T) {
				restore(t, func(w io.Writer) error { _, err := w.Write(joined); return err }, c.images)
			})
			t.Run("restore canonical layout", func(t *testing.T) {
				canon := *s
				canon.Layout = CanonicalLayout(s.Blocks, s.PageSize())
				restore(t, func(w io.Writer) error { return Join(t.Context(), w, &canon, memSource(c.images)) }, c.images)
			})
		})
	}
}

// checkQEMUStream checks what the stream of `qemuMachine` must hold.
func checkQEMUStream(t *testing.T, s *Stream, last SectionType) {
	t.Helper()
	if s.Config == nil || !strings.HasPrefix(s.Config.Machine, "pc-i440fx-") {
		t.Errorf("configuration %+v, want a versioned pc-i440fx machine", s.Config)
	}
	if !s.Footers || s.RAM.Version != ramSectionVersion || s.PageSize() != 4096 {
		t.Errorf("footers %v, RAM %+v, page size %d", s.Footers, s.RAM, s.PageSize())
	}
	lengths := map[string]int64{}
	for _, b := range s.Blocks {
		lengths[b.Name] = b.Length
	}
	for name, want := range map[string]int64{"pc.ram": 32 << 20, "0000:00:02.0/vga.vram": 16 << 20, "pc.bios": 256 << 10} {
		if lengths[name] != want {
			t.Errorf("block %q is %d bytes, want %d (blocks: %v)", name, lengths[name], want, lengths)
		}
	}
	if _, ok := lengths["0000:00:02.0/vga.rom"]; !ok {
		t.Errorf("no VGA option ROM among %v", lengths)
	}
	secs := s.Layout.Sections
	if len(secs) < 2 || secs[0].Type != SectionStart || secs[len(secs)-1].Type != last {
		t.Errorf("RAM sections %v, want START … %s", sectionTypes(secs), last)
	}
	for _, sec := range secs[1 : len(secs)-1] {
		if sec.Type != SectionPart {
			t.Errorf("RAM sections %v, want PART between START and the last", sectionTypes(secs))
		}
	}
	if s.Stats.Unsent != 0 || s.Stats.Resent != 0 || s.Stats.Pages == 0 || s.Stats.Zeros == 0 {
		t.Errorf("stats %+v: want every page sent once, data and zero pages", s.Stats)
	}
	if len(s.Devices) == 0 || s.Devices[0] != secFull || !json.Valid(s.Description) {
		t.Error("device state does not start with a FULL section, or no JSON description")
	}
}

func sectionTypes(secs []Section) []SectionType {
	var ts []SectionType
	for _, s := range secs {
		ts = append(ts, s.Type)
	}
	return ts
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
