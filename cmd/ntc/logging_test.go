package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestLoggerFormats(t *testing.T) {
	for _, tc := range []struct {
		format string
		check  func(t *testing.T, line string)
	}{
		{logText, func(t *testing.T, line string) {
			if !strings.Contains(line, "level=INFO") || !strings.Contains(line, `msg="pushed vm v3"`) || !strings.Contains(line, "component=serve") {
				t.Errorf("text line %q", line)
			}
		}},
		{logJSON, func(t *testing.T, line string) {
			var ev map[string]any
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("json line %q: %v", line, err)
			}
			if ev["msg"] != "pushed vm v3" || ev["component"] != "serve" || ev["level"] != "INFO" {
				t.Errorf("json event %v", ev)
			}
		}},
	} {
		var stderr bytes.Buffer
		g := newGlobals(&bytes.Buffer{}, &stderr)
		g.logFormat = tc.format
		l, err := g.logger("serve")
		if err != nil {
			t.Fatal(err)
		}
		l.Info("pushed vm v3")
		tc.check(t, strings.TrimSpace(stderr.String()))
	}
	g := newGlobals(&bytes.Buffer{}, &bytes.Buffer{})
	g.logFormat = "xml"
	if _, err := g.logger("serve"); !errors.As(err, new(usageError)) {
		t.Errorf("--log-format xml: %v, want a usage error", err)
	}
}
