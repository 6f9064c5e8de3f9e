package sync

import (
	"log/slog"
	"strings"
	gosync "sync"
	"testing"
)

// testLogger logs to t.Log, every level, and to also when it is set.
func testLogger(t testing.TB, also *logLines) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t: t, also: also}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logLines keeps the lines a logger wrote.
type logLines struct {
	mu    gosync.Mutex
	lines []string
}

// has reports whether a line contains s.
func (l *logLines) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

type logWriter struct {
	t    testing.TB
	also *logLines
}

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	w.t.Log(line)
	if w.also != nil {
		w.also.mu.Lock()
		w.also.lines = append(w.also.lines, line)
		w.also.mu.Unlock()
	}
	return len(p), nil
}
