// Package sdnotify tells systemd how a service started with Type=notify is
// doing: ready (READY=1), alive (WATCHDOG=1, at least every half of
// WatchdogSec), stopping (STOPPING=1), and a one-line status. Messages go to
// the datagram socket systemd names in $NOTIFY_SOCKET (a path, or an abstract
// socket when it starts with '@').
//
// Outside systemd (no $NOTIFY_SOCKET) every call does nothing and returns
// nil, so a command can always call it. It implements the protocol of
// sd_notify(3) for these few messages only; it passes no file descriptors.
package sdnotify
