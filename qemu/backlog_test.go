package qemu

import (
	"context"
	"errors"
	"testing"
)

func TestBacklog(t *testing.T) {
	ctx := t.Context()
	b := NewBacklog[int](4)
	b.Add(1)
	mark := b.Mark()
	for _, v := range []int{2, 3, 4, 5} {
		b.Add(v)
	}
	// Limit 4: the 5th item drops the older half.
	if got := b.Items(); len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Errorf("items %v, want [3 4 5]", got)
	}
	even := func(v int) bool { return v%2 == 0 }
	// Item 2 came before the wait but after mark was taken; it was dropped,
	// so the next even one is 4 (numbered 3, mark after it 4).
	if v, next, err := b.Wait(ctx, mark, even); v != 4 || next != 4 || err != nil {
		t.Errorf("Wait from %d: %d, %d, %v", mark, v, next, err)
	}

	// A wait that outlives the items: an Add wakes it.
	got := make(chan int)
	from := b.Mark()
	go func() {
		v, _, _ := b.Wait(ctx, from, even)
		got <- v
	}()
	b.Add(7)
	b.Add(8)
	if v := <-got; v != 8 {
		t.Errorf("woken with %d, want 8", v)
	}

	ended := errors.New("gone")
	b.Add(10)
	b.End(ended)
	b.End(errors.New("second end ignored"))
	// What came before the end is still found; after it, End's error.
	if v, _, err := b.Wait(ctx, 0, func(v int) bool { return v == 10 }); v != 10 || err != nil {
		t.Errorf("item before the end: %d, %v", v, err)
	}
	if _, _, err := b.Wait(ctx, 0, func(v int) bool { return v == 11 }); err != ended {
		t.Errorf("after the end: %v, want %v", err, ended)
	}

	cause := errors.New("test over")
	cctx, cancel := context.WithCancelCause(ctx)
	cancel(cause)
	if _, _, err := NewBacklog[int](8).Wait(cctx, 0, even); err != cause {
		t.Errorf("cancelled: %v, want the cause", err)
	}
}
