package link

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// openTUN creates a TUN device (bare IP packets, no packet information
// header) in this process's network namespace, named by the kernel from
// pattern ("ntcl%d"). The device lives as long as the returned file: closing
// it deletes the device wherever it has been moved since. The file is
// non-blocking, served by Go's poller.
func openTUN(pattern string) (*os.File, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(pattern)
	if err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("create TUN device: %w", err)
	}
	name := ifr.Name()
	return os.NewFile(uintptr(fd), "tun:"+name), name, nil
}

// wakeTimer is a timerfd served by Go's poller. Go's own timers wake up to a
// millisecond late for waits under a millisecond (the poller sleeps in whole
// milliseconds); a timerfd wakes it within tens of microseconds, which the
// lan profile's 0.5 ms one-way delay needs. Any goroutine may re-arm it
// while another waits.
type wakeTimer struct {
	f  *os.File
	fd int
}

func newWakeTimer() (*wakeTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	return &wakeTimer{f: os.NewFile(uintptr(fd), "timerfd"), fd: fd}, nil
}

// set arms the timer to expire after d, or at once if d is not positive.
func (t *wakeTimer) set(d time.Duration) error {
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(max(int64(d), 1))} // 0 would disarm
	return unix.TimerfdSettime(t.fd, 0, &its, nil)
}

// wait blocks until the timer expires or is closed.
func (t *wakeTimer) wait() error {
	var b [8]byte
	_, err := t.f.Read(b[:])
	return err
}

func (t *wakeTimer) Close() error { return t.f.Close() }
