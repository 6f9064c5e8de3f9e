package main

import "log/slog"

// Log formats of the services' logs (--log-format).
const (
	logText = "text"
	logJSON = "json"
)

// logger returns the log of a long-running command (serve, replicate) on
// standard error: one line per event, as text (time, level, message,
// attributes) or, with --log-format json, as one JSON object per line for
// journald and log collectors. --verbose adds debug events.
func (g *globals) logger(component string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if g.verbose {
		opts.Level = slog.LevelDebug
	}
	var h slog.Handler
	switch g.logFormat {
	case logText, "":
		h = slog.NewTextHandler(g.stderr, opts)
	case logJSON:
		h = slog.NewJSONHandler(g.stderr, opts)
	default:
		return nil, usagef("--log-format %q: want %s or %s", g.logFormat, logText, logJSON)
	}
	return slog.New(h).With("component", component), nil
}
