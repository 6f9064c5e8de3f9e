package testguest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWaitSerialTicks(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "serial.log")
	// QEMU writes the console as it comes: the file appears later, lines
	// end in \r\n, a line may arrive in pieces.
	go func() {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return
		}
		defer f.Close()
		for _, s := range []string{"ntc: resumed\r\n", "tick 7\r\n", "ti", "ck 8\r\n", "\r\n"} {
			f.WriteString(s)
		}
	}()
	lines, ticks, err := WaitSerialTicks(ctx, path, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ticks, []int{7, 8}) || len(lines) < 3 || lines[0] != "ntc: resumed" || lines[2] != "tick 8" {
		t.Errorf("lines %q, ticks %v", lines, ticks)
	}

	exited := make(chan struct{})
	close(exited)
	if _, ticks, err := WaitSerialTicks(ctx, path, 3, exited); !errors.Is(err, ErrSerialEnded) || len(ticks) != 2 {
		t.Errorf("the writer ended: ticks %v, %v; want the two and ErrSerialEnded", ticks, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := WaitSerialTicks(cctx, filepath.Join(t.TempDir(), "absent"), 1, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled on a log not there: %v", err)
	}
}

// TestReadSerialFileWholeLines: "tick 1" is not a tick while "tick 12" is
// being written.
func TestReadSerialFileWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	for _, tc := range []struct {
		text  string
		lines int
		ticks []int
	}{
		{"", 0, nil},
		{"tick 1", 0, nil},
		{"tick 11\r\ntick 1", 1, []int{11}},
		{"tick 11\r\ntick 12\r\n", 2, []int{11, 12}},
		{"x\n\ntick 3\nticks 4\n", 3, []int{3}},
	} {
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		lines, ticks, err := ReadSerialFile(path)
		if err != nil || len(lines) != tc.lines || !slices.Equal(ticks, tc.ticks) {
			t.Errorf("%q: lines %q, ticks %v, %v; want %d lines, ticks %v", tc.text, lines, ticks, err, tc.lines, tc.ticks)
		}
	}
}
