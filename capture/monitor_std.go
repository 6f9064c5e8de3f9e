//go:build !goqemu

package capture

import "time"

// maxReply is the longest QMP reply the monitor reads.
const maxReply = maxLine

// newMonitor connects the QMP wire with the standard-library client, unless
// ntc is built with -tags goqemu.
func newMonitor(path string, timeout time.Duration) (monitor, error) {
	return dialMonitor(path, timeout)
}
