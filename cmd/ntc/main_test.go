package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ntc-project/ntc/transport"
)

// ntc runs one command line in-process and returns its exit code and output.
func ntc(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeRandom(t *testing.T, path string, size int, seed uint64) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, size)
	for i := range b[:size/2] {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIndexIncrementalAndDiff(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := writeRandom(t, img, 8<<20, 1)
	code, out, errs := ntc(t, t.Context(), "--json", "index", img)
	if code != 0 {
		t.Fatalf("index: exit %d: %s", code, errs)
	}
	var first indexJSON
	if err := json.Unmarshal([]byte(out), &first); err != nil {
		t.Fatalf("index --json printed %q: %v", out, err)
	}
	if first.Index != img+".idx" || first.Stats.ZeroBytes != 4<<20 || first.Stats.DataBytes != 4<<20 {
		t.Fatalf("unexpected summary %+v", first)
	}

	// Rewrite 64 KiB at 1 MiB and re-index reading only around it.
	r := rand.New(rand.NewPCG(2, 2))
	for i := 1 << 20; i < 1<<20+64<<10; i++ {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	next := filepath.Join(dir, "next.idx")
	code, out, errs = ntc(t, t.Context(), "--json", "index", img, "--prev", img+".idx", "--changed", "1M+64K", "-o", next)
	if code != 0 {
		t.Fatalf("incremental index: exit %d: %s", code, errs)
	}
	var inc indexJSON
	if err := json.Unmarshal([]byte(out), &inc); err != nil {
		t.Fatal(err)
	}
	if inc.Mode != "incremental" || inc.BytesRead >= 1<<20 || inc.Diff == nil || inc.Diff.NewBytes < 64<<10 || inc.Diff.NewBytes > 256<<10 {
		t.Fatalf("incremental summary: mode %s, read %d, diff %+v", inc.Mode, inc.BytesRead, inc.Diff)
	}

	checkSameAsFullIndex(t, img, next)

	code, out, _ = ntc(t, t.Context(), "diff", img+".idx", next)
	if code != 0 || !strings.Contains(out, "new:") {
		t.Fatalf("diff: exit %d: %s", code, out)
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	writeRandom(t, img, 1<<20, 3)
	bad := filepath.Join(dir, "bad.idx")
	if err := os.WriteFile(bad, []byte("NTCINDEX garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := ntc(t, t.Context(), "index", img); code != 0 {
		t.Fatal(errs)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing image", []string{"index", filepath.Join(dir, "nope.img")}, exitError, "no such file"},
		{"directory", []string{"index", dir}, exitError, "is a directory"},
		{"corrupt prev", []string{"index", img, "--prev", bad, "--changed", "0+1"}, exitError, "re-create it"},
		{"changed without prev", []string{"index", img, "--changed", "0+1"}, exitUsage, "--prev"},
		{"bad range", []string{"index", img, "--prev", img + ".idx", "--changed", "x"}, exitUsage, "START-END"},
		{"no args", []string{"index"}, exitUsage, "IMAGE"},
		{"unknown flag", []string{"index", "--frobnicate", img}, exitUsage, "frobnicate"},
		{"bad average", []string{"index", img, "--average", "3"}, exitUsage, "--average"},
		{"diff corrupt", []string{"diff", bad, bad}, exitError, "corrupt index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := ntc(t, t.Context(), tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, errs, tc.code, tc.want)
			}
		})
	}
}

func TestInterruptedIndexLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	writeRandom(t, img, 4<<20, 4)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	code, _, errs := ntc(t, ctx, "index", img)
	if code != exitInterrupted {
		t.Fatalf("exit %d (%s), want %d", code, errs, exitInterrupted)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("the directory holds %d entries after an interrupted index, want only the image", len(ents))
	}
}

func TestConfigFileAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	writeRandom(t, img, 2<<20, 5)
	cfg := filepath.Join(dir, "ntc.yaml")
	if err := os.WriteFile(cfg, []byte("chunk:\n  average: 64K\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	params := func(args ...string) string {
		t.Helper()
		code, out, errs := ntc(t, t.Context(), append([]string{"--json", "--config", cfg, "index", img}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		var res indexJSON
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		return res.Params
	}
	if p := params(); !strings.Contains(p, "min=32768") {
		t.Errorf("config file average 64K gave %s", p)
	}
	t.Setenv("NTC_CHUNK_AVERAGE", "8K")
	if p := params(); !strings.Contains(p, "min=4096") {
		t.Errorf("NTC_CHUNK_AVERAGE=8K gave %s", p)
	}
	if p := params("--average", "32K"); !strings.Contains(p, "min=16384") {
		t.Errorf("--average 32K gave %s", p)
	}
	code, _, errs := ntc(t, t.Context(), "--config", filepath.Join(dir, "absent.yaml"), "version")
	if code != exitUsage || !strings.Contains(errs, "not found") {
		t.Errorf("missing config: exit %d, %q", code, errs)
	}
}

func TestDemoRuns(t *testing.T) {
	code, out, errs := ntc(t, t.Context(), "--json", "demo", "--size", "16M")
	if code != 0 {
		t.Fatalf("demo: exit %d: %s", code, errs)
	}
	var res demoJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("demo --json printed %q: %v", out, err)
	}
	if !res.Identical || res.IncrementalRead >= res.FullRead/4 || res.Diff.NewBytes < res.ChangedBytes {
		t.Fatalf("demo summary %+v", res)
	}
	if res.PushSecondBytes == 0 || res.PushSecondBytes > res.PushFirstBytes/4 || res.PushSecondBytes > uint64(2*res.ChangedBytes)+64<<10 {
		t.Fatalf("demo pushes: %d then %d bytes on the wire for %d changed", res.PushFirstBytes, res.PushSecondBytes, res.ChangedBytes)
	}
}

func TestNoIdentitySaysRunInit(t *testing.T) {
	t.Setenv("NTC_HOME", t.TempDir())
	peer, err := transport.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs := ntc(t, t.Context(), "push", "disk.img", "--to", "127.0.0.1:1", "--peer", peer.ID().String())
	if code != exitError || !strings.Contains(errs, "no identity found") || !strings.Contains(errs, "run 'ntc init'") {
		t.Fatalf("exit %d, stderr %q; want exit %d saying to run 'ntc init'", code, errs, exitError)
	}
}
