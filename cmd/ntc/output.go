package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// verboseLogger is the log of a one-shot command's libraries: with
// --verbose every event (debug and up) as text on standard error, else nil
// (nothing).
func (g *globals) verboseLogger() *slog.Logger {
	if !g.verbose {
		return nil
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ms is d in milliseconds, to the microsecond: the unit of the *_ms
// fields ntc prints.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// writeJSONLine writes v as one line, for streams of events.
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// humanBytes formats n with binary units: 1.5 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// plural formats a count of things: "1 version", "3 versions".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// rate formats bytes per second in decimal megabytes, as links are sold.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MB/s", float64(n)/d.Seconds()/1e6)
}

// progress draws a bar on a terminal: bytes done, rate, ETA. It draws
// nothing when stderr is not a terminal or JSON output was asked for.
type progress struct {
	label string
	total atomic.Int64 // 0: not known (yet)
	done  atomic.Int64
	start time.Time
	w     io.Writer
	stop  chan struct{}
	wg    sync.WaitGroup
}

func (g *globals) newProgress(label string, total int64) *progress {
	p := &progress{label: label, start: time.Now(), stop: make(chan struct{})}
	p.total.Store(total)
	f, ok := g.stderr.(*os.File)
	if g.json || !ok || !term.IsTerminal(int(f.Fd())) {
		return p
	}
	p.w = f
	p.wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.w, "\r\033[K")
				return
			case <-t.C:
				p.draw()
			}
		}
	})
	return p
}

// Add records n more bytes done; safe for concurrent use.
func (p *progress) Add(n int64) { p.done.Add(n) }

// AddTotal raises the total by n: work learnt as it goes (a push learns
// what the receiver wants a round at a time).
func (p *progress) AddTotal(n int64) { p.total.Add(n) }

func (p *progress) draw() {
	done, el, total := p.done.Load(), time.Since(p.start), p.total.Load()
	if total <= 0 {
		// Nothing known to measure against: what was done, and how fast.
		fmt.Fprintf(p.w, "\r\033[K%s %s %s", p.label, humanBytes(done), rate(done, el))
		return
	}
	frac := min(float64(done)/float64(total), 1)
	const width = 30
	bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
	eta := "-"
	if done > 0 && frac < 1 {
		eta = (time.Duration(float64(el)/frac) - el).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r\033[K%s [%s] %3.0f%% %s/%s %s ETA %s", p.label, bar, 100*frac,
		humanBytes(done), humanBytes(total), rate(done, el), eta)
}

// Done removes the bar.
func (p *progress) Done() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}
