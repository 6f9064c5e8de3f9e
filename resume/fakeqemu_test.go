package resume

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/capture/migstream"
	"github.com/ntc-project/ntc/qemu/opt"
	"github.com/ntc-project/ntc/qemu/qmptest"
)

// The test binary plays QEMU (and the keeper of a detached copy): Start
// runs it as Config.QEMU, and TestMain turns it into a fake QEMU when
// fakeQEMUEnv names a scenario. The fake listens on every -qmp socket of
// its command line, answers the commands resume sends, reads the
// migration stream from the descriptor getfd passed, and writes what it
// saw into its working directory (resume's work directory).
const fakeQEMUEnv = "NTC_RESUME_FAKE_QEMU"

// Scenarios of the fake QEMU.
const (
	fakeLoads   = "loads"   // reads the stream, reports MIGRATION completed
	fakeRefuses = "refuses" // reads the stream, says what did not match and exits 1
	fakeStalls  = "stalls"  // never reads the stream
	fakeDies    = "dies"    // exits at once, before its QMP socket exists
)

// Files the fake QEMU writes in its working directory.
const (
	fakeArgv     = "fake-argv"     // its command line, NUL-separated
	fakeCommands = "fake-commands" // the QMP commands it answered, one a line
	fakeStream   = "fake-stream"   // the migration stream it read
)

func init() {
	// The keeper clears its parent-death signal on the thread it was set
	// on, the main one (see Keep).
	if len(os.Args) > 1 && os.Args[1] == KeeperArg {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == KeeperArg {
		// What cmd/ntc's keeper command does.
		cfg, err := ParseKeeperArgs(os.Args[2:])
		if err == nil {
			err = Keep(context.Background(), cfg, os.Stdin, os.Stdout, os.Stderr)
		}
		if _, qemuEnded := errors.AsType[*exec.ExitError](err); err != nil && !qemuEnded {
			fmt.Fprintln(os.Stderr, "keeper:", err)
		}
		os.Exit(KeeperExitCode(err))
	}
	if os.Getenv(mdweEnv) != "" {
		os.Exit(mdweExec(os.Args[1:]))
	}
	if sc := os.Getenv(fakeQEMUEnv); sc != "" {
		os.Exit(fakeQEMU(sc, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeQEMU is QEMU for scenario sc, with command line args.
func fakeQEMU(sc string, args []string) int {
	if slices.Contains(args, "-version") {
		fmt.Println("QEMU emulator version 7.2.22 (ntc resume test)")
		return 0
	}
	if err := os.WriteFile(fakeArgv, []byte(strings.Join(args, "\x00")), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu:", err)
		return 1
	}
	if sc == fakeDies {
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: -machine pc-i440fx-7.2: unsupported machine type")
		return 1
	}
	q := &fakeMonitor{sc: sc, files: map[string]*os.File{}, quit: make(chan int)}
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-qmp" {
			continue
		}
		o, err := opt.Parse(args[i+1], "path")
		path, _ := o.Get("path")
		if err != nil || !strings.HasPrefix(path, "unix:") {
			fmt.Fprintf(os.Stderr, "fake qemu: -qmp %s: %v\n", args[i+1], err)
			return 1
		}
		l, err := net.Listen("unix", strings.TrimPrefix(path, "unix:"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake qemu:", err)
			return 1
		}
		go qmptest.Serve(l, q.handle)
	}
	return <-q.quit
}

type fakeMonitor struct {
	sc   string
	quit chan int

	mu      sync.Mutex
	files   map[string]*os.File // getfd's, by name
	running bool
}

func (q *fakeMonitor) handle(r qmptest.Request) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if f, err := os.OpenFile(fakeCommands, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		fmt.Fprintf(f, "%s %s\n", r.Command, r.Args)
		f.Close()
	}
	ok := []string{`{"return": {}}`}
	var a struct {
		FDName string `json:"fdname"`
		URI    string `json:"uri"`
	}
	json.Unmarshal(r.Args, &a)
	switch r.Command {
	case "migrate-set-capabilities", "set_link", "query-migrate":
		return ok
	case "getfd":
		if len(r.Files) != 1 {
			return []string{`{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}`}
		}
		q.files[a.FDName] = r.Files[0]
		return ok
	case "migrate-incoming":
		f := q.files[strings.TrimPrefix(a.URI, "fd:")]
		if f == nil {
			return []string{`{"error": {"class": "GenericError", "desc": "unknown fd"}}`}
		}
		go q.incoming(f, r.Send)
		return ok
	case "cont":
		q.running = true
		return ok
	case "query-status":
		if q.running {
			return []string{`{"return": {"status": "running", "running": true}}`}
		}
		return []string{`{"return": {"status": "inmigrate", "running": false}}`}
	case "quit":
		r.Send(`{"return": {}}`)
		q.quit <- 0
		select {} // the process ends
	}
	return []string{`{"error": {"class": "CommandNotFound", "desc": "The command ` + r.Command + ` has not been found"}}`}
}

// incoming reads the migration stream as the scenario says.
func (q *fakeMonitor) incoming(f *os.File, send func(string)) {
	if q.sc == fakeStalls {
		return // holds f, reads nothing
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err == nil {
		err = os.WriteFile(fakeStream, data, 0o600)
	}
	if err != nil || q.sc == fakeRefuses {
		fmt.Fprintf(os.Stderr, "qemu-system-x86_64: Unknown ramblock \"pc.ram\", cannot accept migration (%v)\n", err)
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: load of migration failed: Invalid argument")
		q.quit <- 1
		return
	}
	send(`{"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {"seconds": 1, "microseconds": 0}}`)
	send(`{"event": "MIGRATION", "data": {"status": "completed"}, "timestamp": {"seconds": 2, "microseconds": 0}}`)
}

// fakeCheckpoint writes the images of guestManifest's checkpoint into a
// new directory, with 1 MiB of random RAM in block pc.ram, and returns the
// directory and the migration stream they make (what QEMU must be fed).
func fakeCheckpoint(t *testing.T) (dir string, stream []byte) {
	t.Helper()
	dir = t.TempDir()
	ram := make([]byte, 1<<20)
	rand.Read(ram)
	// One FULL section ("timer", opaque payload), then EOF.
	devices := append([]byte{0x04, 0, 0, 0, 3, 5, 't', 'i', 'm', 'e', 'r', 0, 0, 0, 0, 0, 0, 0, 1}, "fake timer state\x00"...)
	desc := `{"config": {"machine": "pc-i440fx-7.2", "capabilities": null, "uuid": null},
		"ram": {"SectionID": 2, "InstanceID": 0, "Version": 4}, "footers": false,
		"blocks": [{"name": "pc.ram", "length": 1048576}],
		"sections": [{"type": 1, "runs": []}, {"type": 2, "runs": [[0, 0, 256, 1]]}],
		"description": {"page_size": 4096}}`
	m := guestManifest()
	m.RAM[0].Size = int64(len(ram))
	m.DeviceState.Size, m.Stream.Size = int64(len(devices)), int64(len(desc))
	for name, data := range map[string][]byte{
		ManifestImage: nil, "ram-pc.ram": ram, "device": devices, "stream": []byte(desc),
	} {
		if name == ManifestImage {
			var err error
			if data, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "disk-vda"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "disk-vda"), m.Disks[0].Size); err != nil {
		t.Fatal(err)
	}
	s, err := capture.DecodeStreamDescription([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	s.Devices = devices
	var buf bytes.Buffer
	if err := migstream.Join(t.Context(), &buf, s, ramSource{"pc.ram": bytes.NewReader(ram)}); err != nil {
		t.Fatal(err)
	}
	return dir, buf.Bytes()
}

type ramSource map[string]io.ReaderAt

func (s ramSource) Block(name string, _ int64) (io.ReaderAt, error) { return s[name], nil }
func (s ramSource) Close() error                                    { return nil }

// fakeConfig is a Config that resumes images with the test binary as
// QEMU, playing scenario sc.
func fakeConfig(t *testing.T, sc, images string) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeQEMUEnv, sc)
	boot := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd"} {
		if err := os.WriteFile(filepath.Join(boot, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Config{Images: images, WorkDir: filepath.Join(t.TempDir(), "w"), QEMU: self,
		Kernel: filepath.Join(boot, "vmlinuz"), Initrd: filepath.Join(boot, "initrd")}
}

func readLines(t *testing.T, path, sep string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), sep), sep)
}

// commandNames returns the commands the fake QEMU answered, in order.
func commandNames(t *testing.T, work string) []string {
	var names []string
	for _, l := range readLines(t, filepath.Join(work, fakeCommands), "\n") {
		names = append(names, strings.Fields(l)[0])
	}
	return names
}

// TestStartFakeQEMU: resume runs the QEMU it planned paused, feeds it
// exactly the stream the images make through the descriptor getfd passed,
// sets the links down before the guest runs (unless the network is on),
// lets it run, and quits it on Stop.
func TestStartFakeQEMU(t *testing.T) {
	images, stream := fakeCheckpoint(t)
	for _, tc := range []struct {
		network Network
		want    []string
	}{
		{NetworkOff, []string{"migrate-set-capabilities", "getfd", "migrate-incoming", "set_link", "cont", "query-status", "quit"}},
		{NetworkOn, []string{"migrate-set-capabilities", "getfd", "migrate-incoming", "cont", "query-status", "quit"}},
	} {
		t.Run(string(tc.network), func(t *testing.T) {
			cfg := fakeConfig(t, fakeLoads, images)
			cfg.Network = tc.network
			vm, err := Start(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { vm.Kill() })
			argv := readLines(t, filepath.Join(cfg.WorkDir, fakeArgv), "\x00")
			if !slices.Equal(argv, vm.Plan.Argv[1:]) {
				t.Errorf("QEMU ran with\n %q\nplanned\n %q", argv, vm.Plan.Argv[1:])
			}
			if i := slices.Index(argv, "-incoming"); i < 0 || argv[i+1] != "defer" || !slices.Contains(argv, "-S") {
				t.Errorf("QEMU did not start paused, waiting for the stream: %q", argv)
			}
			got, err := os.ReadFile(filepath.Join(cfg.WorkDir, fakeStream))
			if err != nil || !bytes.Equal(got, stream) {
				t.Errorf("QEMU read %d bytes of stream (%v), the images make %d", len(got), err, len(stream))
			}
			if vm.Timings.StreamBytes != int64(len(stream)) {
				t.Errorf("StreamBytes %d, fed %d", vm.Timings.StreamBytes, len(stream))
			}
			if fi, err := os.Stat(filepath.Join(cfg.WorkDir, "disk-vda.qcow2")); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("overlay: %v, %v", fi, err)
			}
			if err := vm.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := commandNames(t, cfg.WorkDir); !slices.Equal(got, tc.want) {
				t.Errorf("QMP commands %q, want %q", got, tc.want)
			}
			if b, _ := os.ReadFile(filepath.Join(cfg.WorkDir, fakeCommands)); tc.network == NetworkOff &&
				!strings.Contains(string(b), `set_link {"name":"nic0","up":false}`) {
				t.Errorf("link of nic0 not set down:\n%s", b)
			}
		})
	}
}

// TestStartFakeQEMUFails: a QEMU that dies, refuses the stream or never
// reads it fails Start with what QEMU said or the load timeout, and
// leaves nothing running and no overlay behind.
func TestStartFakeQEMUFails(t *testing.T) {
	images, _ := fakeCheckpoint(t)
	for _, tc := range []struct {
		sc    string
		is    error
		stage string // the ExitError's, "" for none
		says  string
	}{
		{sc: fakeDies, stage: "start", says: "unsupported machine type"},
		{sc: fakeRefuses, is: ErrIncompatible, stage: "incoming migration", says: `Unknown ramblock "pc.ram"`},
		{sc: fakeStalls, is: ErrLoadTimeout, says: "had not loaded the migration stream"},
	} {
		t.Run(tc.sc, func(t *testing.T) {
			cfg := fakeConfig(t, tc.sc, images)
			cfg.LoadTimeout = 2 * time.Second
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			vm, err := Start(ctx, cfg)
			if err == nil {
				vm.Kill()
				t.Fatal("Start succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
			var ee *ExitError
			if errors.As(err, &ee) != (tc.stage != "") || (ee != nil && ee.Stage != tc.stage) {
				t.Errorf("error %#v, want an ExitError in stage %q", err, tc.stage)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if _, err := os.Stat(filepath.Join(cfg.WorkDir, "disk-vda.qcow2")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("overlay left behind: %v", err)
			}
			argv := readLines(t, filepath.Join(cfg.WorkDir, fakeArgv), "\x00")
			if pids := fakeQEMUs(t, argv); len(pids) > 0 {
				t.Errorf("fake QEMU still running: pids %v", pids)
			}
		})
	}
}

// fakeQEMUs returns the pids of running processes with command line argv
// after argv[0].
func fakeQEMUs(t *testing.T, argv []string) []int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"); len(args) > 1 && slices.Equal(args[1:], argv) {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !bytes.Contains(st, []byte(") Z ")) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// TestStartFakeQEMUDetached: a detached copy runs under a keeper (the test
// binary again); after Release it no longer depends on ntc's QMP session,
// and Stop still ends it.
func TestStartFakeQEMUDetached(t *testing.T) {
	images, _ := fakeCheckpoint(t)
	cfg := fakeConfig(t, fakeLoads, images)
	self, _ := os.Executable()
	cfg.Detach, cfg.Keeper = true, []string{self, KeeperArg}
	vm, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Kill() })
	if err := vm.Release(); err != nil {
		t.Fatal(err)
	}
	// QEMU is the keeper's child, not ours, and runs on.
	if err := syscall.Kill(vm.PID(), 0); err != nil {
		t.Fatalf("QEMU (pid %d) after Release: %v", vm.PID(), err)
	}
	if ppid := parentPID(t, vm.PID()); ppid == os.Getpid() {
		t.Errorf("QEMU's parent is the test, not the keeper")
	}
	select {
	case <-vm.Exited():
		t.Fatal("the copy ended at Release")
	default:
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Exited():
	case <-t.Context().Done():
	}
}

func parentPID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	var ppid int
	fmt.Sscan(f[1], &ppid)
	return ppid
}
