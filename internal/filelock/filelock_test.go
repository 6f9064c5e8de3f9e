package filelock

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTryLock(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string) // what holds path, or not, before TryLock
		want    error                           // nil: TryLock takes the lock
	}{
		{"free", func(*testing.T, string) {}, nil},
		{"held", func(t *testing.T, path string) {
			f, err := TryLock(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
		}, ErrBusy},
		{"free after the holder closed it", func(t *testing.T, path string) {
			f, err := TryLock(path)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}, nil},
		{"a symbolic link", func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Join(t.TempDir(), "elsewhere"), path); err != nil {
				t.Fatal(err)
			}
		}, errSymlink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lock")
			tt.prepare(t, path)
			f, err := TryLock(path)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("TryLock: %v", err)
			case tt.want == errSymlink:
				if err == nil || errors.Is(err, ErrBusy) {
					t.Fatalf("TryLock through a symbolic link: %v, want an open error", err)
				}
				if _, serr := os.Stat(path); !errors.Is(serr, fs.ErrNotExist) {
					t.Errorf("TryLock created the link's target: %v", serr)
				}
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("TryLock: %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			defer f.Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != Mode {
				t.Errorf("lock file mode %v, want %v", fi.Mode().Perm(), os.FileMode(Mode))
			}
		})
	}
}

// errSymlink marks the case where TryLock must refuse to open path.
var errSymlink = errors.New("symlink")

func TestLock(t *testing.T) {
	tests := []struct {
		name    string
		release bool // the holder lets go once the waiter found it held
		cancel  bool // the waiter's context ends then
		want    error
	}{
		{"waits for the holder", true, false, nil},
		{"cancelled while waiting", false, true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lock")
			held, err := TryLock(path)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			tries := make(chan struct{}, 1)
			got := make(chan error, 1)
			go func() {
				f, err := Wait(ctx, func() (*os.File, error) {
					f, err := TryLock(path)
					if errors.Is(err, ErrBusy) {
						select {
						case tries <- struct{}{}:
						default:
						}
					}
					return f, err
				})
				if err == nil {
					f.Close()
				}
				got <- err
			}()
			<-tries // the waiter has found the lock held
			if tt.release {
				held.Close()
			}
			if tt.cancel {
				cancel()
			}
			err = <-got
			if tt.want == nil && err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if tt.want != nil && (!errors.Is(err, tt.want) || !errors.Is(err, ErrBusy)) {
				t.Fatalf("Wait: %v, want %v and ErrBusy", err, tt.want)
			}
		})
	}
}

func TestLockNamesTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(t.Context(), path, "the first holder")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = Lock(ctx, path, "the first holder")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "the first holder") {
		t.Fatalf("Lock while held, cancelled: %v, want ErrBusy and context.Canceled", err)
	}
	unlock()
	unlock, err = Lock(t.Context(), path, "the first holder")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	unlock()
}

// TestWaitStopsAtOtherErrors: only busy is worth waiting for.
func TestWaitStopsAtOtherErrors(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	_, err := Wait(t.Context(), func() (int, error) { n++; return 0, boom })
	if !errors.Is(err, boom) || n != 1 {
		t.Fatalf("Wait: %v after %d tries, want boom after 1", err, n)
	}
}

// TestTryLockFile: a file opened elsewhere (as a cleaner opens another
// process's lock, never creating it) is busy while the holder lives and
// free once it closed its file.
func TestTryLockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	held, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := TryLockFile(f); !errors.Is(err, ErrBusy) {
		t.Fatalf("TryLockFile while held: %v, want ErrBusy", err)
	}
	held.Close()
	if err := TryLockFile(f); err != nil {
		t.Fatalf("TryLockFile after the holder closed: %v", err)
	}
	if _, err := TryLock(path); !errors.Is(err, ErrBusy) {
		t.Fatalf("TryLock while TryLockFile holds it: %v, want ErrBusy", err)
	}
}
