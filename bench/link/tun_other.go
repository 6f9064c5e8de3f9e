//go:build !linux

package link

import (
	"errors"
	"os"
	"time"
)

var errNotLinux = errors.New("bench/link needs Linux (network namespaces and TUN devices)")

func openTUN(string) (*os.File, string, error) { return nil, "", errNotLinux }

type wakeTimer struct{}

func newWakeTimer() (*wakeTimer, error)    { return nil, errNotLinux }
func (*wakeTimer) set(time.Duration) error { return errNotLinux }
func (*wakeTimer) wait() error             { return errNotLinux }
func (*wakeTimer) Close() error            { return nil }
