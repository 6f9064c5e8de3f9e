package testguest

import (
	"context"
	"errors"
	"regexp"
	"testing"
)

func TestConsole(t *testing.T) {
	ctx := t.Context()
	c := NewConsole()
	c.Add("booting")
	c.Add("tick 1")
	c.Add("tick 2")
	if got, err := c.WaitTick(ctx, 2); got != 2 || err != nil {
		t.Errorf("WaitTick(2) = %d, %v", got, err)
	}
	done := make(chan int)
	go func() {
		n, _ := c.WaitTick(ctx, 4)
		done <- n
	}()
	c.Add("tick 3")
	c.Add("noise")
	c.Add("tick 5") // a guest resumed from an older checkpoint may skip ahead
	if got := <-done; got != 5 {
		t.Errorf("WaitTick(4) = %d, want the last tick, 5", got)
	}
	m, n, err := c.WaitLine(ctx, 0, regexp.MustCompile(`^tick (\d)$`))
	if err != nil || n != 1 || m[1] != "1" {
		t.Errorf("WaitLine from 0: %q line %d, %v", m, n, err)
	}
	if _, n, _ := c.WaitLine(ctx, c.Mark()-1, regexp.MustCompile(`tick`)); n != c.Mark()-1 {
		t.Errorf("WaitLine from the last line: line %d", n)
	}

	c.SetTick(3) // carried over from an older console: never goes back
	if c.LastTick() != 5 {
		t.Errorf("LastTick after SetTick(3) = %d", c.LastTick())
	}

	exited := &exitError{msg: "qemu exited (status 1)"}
	c.End(exited)
	if _, err := c.WaitTick(ctx, 6); !errors.Is(err, ErrExited) {
		t.Errorf("WaitTick after the end: %v, want ErrExited", err)
	}
	if _, _, err := c.WaitLine(ctx, 0, regexp.MustCompile(`never`)); !errors.Is(err, ErrExited) {
		t.Errorf("WaitLine after the end: %v, want ErrExited", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := NewConsole().WaitTick(cctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitTick, cancelled: %v", err)
	}
}
