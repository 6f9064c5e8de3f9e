package resume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/ntc-project/ntc/capture"
	"github.com/ntc-project/ntc/internal/libvirttest"
)

// stuckLibvirt is a libvirt whose restore hangs as one does behind a QEMU
// that reads no more of its stream: it reads the save image's header from
// the FIFO (or, late, opens it only once asked for the domain), then waits
// until the domain is destroyed.
type stuckLibvirt struct {
	hdr       int  // bytes of header to read
	late      bool // open the image only after the first lookup
	lookedUp  chan struct{}
	destroyed chan struct{}
	once      sync.Once
	lookOnce  sync.Once
	openErr   error
}

func newStuckLibvirt(hdr int, late bool) *stuckLibvirt {
	return &stuckLibvirt{hdr: hdr, late: late, lookedUp: make(chan struct{}), destroyed: make(chan struct{})}
}

func (l *stuckLibvirt) DomainRestoreFlags(from string, _ libvirt.OptString, _ uint32) error {
	if l.late {
		<-l.lookedUp
	}
	f, err := os.Open(from)
	if err != nil {
		l.openErr = err
		return fmt.Errorf("cannot open the save image: %w", err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, make([]byte, l.hdr)); err != nil {
		return err
	}
	<-l.destroyed
	return errors.New("domain destroyed while restoring")
}

func (l *stuckLibvirt) DomainLookupByName(name string) (libvirt.Domain, error) {
	l.lookOnce.Do(func() { close(l.lookedUp) })
	return libvirt.Domain{Name: name}, nil
}

func (l *stuckLibvirt) DomainDestroy(libvirt.Domain) error {
	l.once.Do(func() { close(l.destroyed) })
	return nil
}

// endless writes zeros until its writer fails.
func endless(ctx context.Context, w io.Writer) error {
	b := make([]byte, 64<<10)
	for {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
}

// TestRestoreWithinStalled: a restore that does not finish within the
// load timeout (or before its context ends) is stopped: the feed is cut
// off, the domain destroyed, the FIFO removed, and the error says why. A
// libvirt that comes to open the image only then finds none, rather than
// waiting for a writer forever.
func TestRestoreWithinStalled(t *testing.T) {
	hdr, err := encodeSaveHeader("<domain/>")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		late   bool
		cancel bool
		want   error
	}{
		{name: "load timeout", want: ErrLoadTimeout},
		{name: "cancelled", cancel: true, want: context.Canceled},
		{name: "libvirt opens the image late", late: true, want: ErrLoadTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), libvirtSaveImage)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			feed, err := feedSaveImage(ctx, path, hdr, endless)
			if err != nil {
				t.Fatal(err)
			}
			lv := newStuckLibvirt(len(hdr), tc.late)
			limit := 20 * time.Millisecond
			if tc.cancel {
				limit = time.Hour
				cancel()
			}
			n, err := restoreWithin(ctx, lv, "vm", feed, limit)
			if !errors.Is(err, tc.want) {
				t.Fatalf("restoreWithin: %v, want %v", err, tc.want)
			}
			if tc.want == ErrLoadTimeout && !strings.Contains(err.Error(), "--load-timeout") {
				t.Errorf("the error does not say how to allow more time: %v", err)
			}
			if tc.late && !errors.Is(lv.openErr, fs.ErrNotExist) {
				t.Errorf("a libvirt opening the image after the timeout: %v, want it gone", lv.openErr)
			}
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the FIFO is left: %v", err)
			}
			t.Logf("%v after %d stream bytes", err, n)
		})
	}
}

// TestRestoreWithinStalledQEMU: libvirt's real restore of a save image
// whose stream stops after QEMU's header (a stalled feed: QEMU waits for
// the rest) ends once the load timeout passes, with ErrLoadTimeout, and
// leaves no domain.
func TestRestoreWithinStalledQEMU(t *testing.T) {
	libvirttest.Daemon(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "ntclvs-") // libvirt's QEMU user must reach it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	name := "ntc-test-stall-" + hex.EncodeToString(rnd[:])
	t.Cleanup(func() { libvirttest.Virsh(context.WithoutCancel(ctx), "destroy", name) })
	hdr, err := encodeSaveHeader(fmt.Sprintf(`<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><controller type='usb' model='none'/><memballoon model='none'/></devices></domain>`, name))
	if err != nil {
		t.Fatal(err)
	}
	stalled := func(ctx context.Context, w io.Writer) error {
		if _, err := w.Write([]byte("QEVM\x00\x00\x00\x03")); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	}
	feed, err := feedSaveImage(ctx, filepath.Join(dir, libvirtSaveImage), hdr, stalled)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := capture.DialLibvirt(ctx, libvirttest.URI, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t0 := time.Now()
	_, err = restoreWithin(ctx, conn, name, feed, 3*time.Second)
	if !errors.Is(err, ErrLoadTimeout) {
		t.Fatalf("restore of a stalled stream: %v, want ErrLoadTimeout", err)
	}
	t.Logf("stopped after %v: %v", time.Since(t0), err)
	if st, err := libvirttest.Virsh(ctx, "domstate", name); err == nil {
		t.Errorf("the domain %s is left, %s", name, strings.TrimSpace(st))
	}
}
