package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ntc-project/ntc/internal/atomicfile"
	"github.com/ntc-project/ntc/replicate"
)

// replicateStatus is what 'ntc replicate' records after each round for
// 'ntc status': $NTC_HOME/status/replicate-SET.json, replaced atomically.
type replicateStatus struct {
	Set     string    `json:"set"`
	Guest   string    `json:"guest"` // the QMP socket
	To      string    `json:"to"`
	Peer    string    `json:"peer"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
	EveryMS float64   `json:"every_ms"`
	// Stopped is set when replicate ended (Ctrl-C, SIGTERM, an error).
	Stopped *time.Time     `json:"stopped,omitempty"`
	StopErr string         `json:"stop_error,omitempty"`
	Rounds  int            `json:"rounds"`
	Last    *replicateJSON `json:"last_round,omitempty"`
	// Held is the checkpoint the receiver holds and the instant it is of:
	// a failure now loses the guest's work since then.
	HeldSeq     int        `json:"held_seq"`
	HeldInstant *time.Time `json:"held_instant,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// RateBPS is the last push's rate on the wire, bytes per second.
	RateBPS float64 `json:"rate_bps"`
}

func statusDir(home string) string { return filepath.Join(home, "status") }

func statusPath(home, set string) string {
	return filepath.Join(statusDir(home), "replicate-"+set+".json")
}

// record updates s with round r, at now.
func (s *replicateStatus) record(r replicate.Round, out replicateJSON, now time.Time) {
	s.Updated, s.Rounds, s.Last = now, r.N, &out
	if r.Err != nil {
		s.LastError, s.LastErrorAt = r.Err.Error(), &now
		return
	}
	if r.Committed {
		s.LastSuccess = &now
		s.HeldSeq = r.Seq
		instant := now.Add(-r.Lag)
		s.HeldInstant = &instant
		if r.Duration > 0 {
			s.RateBPS = float64(r.BytesSent) / r.Duration.Seconds()
		}
	}
}

func writeStatus(home string, s *replicateStatus) error {
	if err := os.MkdirAll(statusDir(home), 0o700); err != nil {
		return fmt.Errorf("record status: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(statusPath(home, s.Set), 0o600, append(b, '\n'))
}

// readStatuses reads every replication status recorded under home.
func readStatuses(home string) ([]*replicateStatus, error) {
	paths, err := filepath.Glob(filepath.Join(statusDir(home), "replicate-*.json"))
	if err != nil {
		return nil, err
	}
	var out []*replicateStatus
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read status: %w", err)
		}
		var s replicateStatus
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("read status %s: %w", p, err)
		}
		out = append(out, &s)
	}
	return out, nil
}

// running reports whether the replicate that wrote s still runs.
func (s *replicateStatus) running() bool {
	if s.Stopped != nil || s.PID <= 0 {
		return false
	}
	err := syscall.Kill(s.PID, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// describe is the status in words, as of now.
func (s *replicateStatus) describe(now time.Time) string {
	var b strings.Builder
	state := fmt.Sprintf("replicating every %s, pid %d", time.Duration(s.EveryMS*float64(time.Millisecond)), s.PID)
	if !s.running() {
		state = "not running"
		if s.Stopped != nil {
			state = "stopped " + s.Stopped.Local().Format(time.DateTime)
			if s.StopErr != "" {
				state += ": " + s.StopErr
			}
		}
	}
	fmt.Fprintf(&b, "%s -> %s (%s)\n", s.Set, s.To, state)
	if s.HeldInstant != nil {
		age := now.Sub(*s.HeldInstant)
		fmt.Fprintf(&b, "  the receiver holds checkpoint %d of %s: a failure now loses %s of the guest's work\n",
			s.HeldSeq, s.HeldInstant.Local().Format("15:04:05"), age.Round(100*time.Millisecond))
	} else {
		fmt.Fprintf(&b, "  the receiver holds nothing of it yet\n")
	}
	if l := s.Last; l != nil && l.Committed {
		fmt.Fprintf(&b, "  last round %d at %s: paused %.0f ms, sent %s in %.1f s (%s), lag %.1f s\n",
			l.Round, l.Start.Local().Format("15:04:05"), l.GuestPauseMS, humanBytes(int64(l.BytesSent)),
			l.DurationMS/1000, humanRate(s.RateBPS), l.LagMS/1000)
	} else if l != nil {
		fmt.Fprintf(&b, "  last round %d at %s failed (%d in a row)\n", l.Round, l.Start.Local().Format("15:04:05"), l.Failures)
	}
	if s.LastSuccess != nil {
		fmt.Fprintf(&b, "  last success %s (%s ago)\n", s.LastSuccess.Local().Format(time.DateTime), now.Sub(*s.LastSuccess).Round(time.Second))
	}
	if s.LastErrorAt != nil {
		fmt.Fprintf(&b, "  last error %s: %s\n", s.LastErrorAt.Local().Format(time.DateTime), s.LastError)
	}
	return b.String()
}

// humanRate formats bytes per second as bits per second, as links are sold.
func humanRate(bps float64) string {
	bits := bps * 8
	switch {
	case bits >= 1e9:
		return fmt.Sprintf("%.1f Gbit/s", bits/1e9)
	case bits >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", bits/1e6)
	default:
		return fmt.Sprintf("%.0f kbit/s", bits/1e3)
	}
}

// printStatus writes the status in words, as of now; with hints, what to
// do about each peer that did not answer.
func printStatus(g *globals, out statusJSON, store string, now time.Time, hints bool) {
	if len(out.Replicating) == 0 && len(out.Received) == 0 && len(out.Peers) == 0 {
		fmt.Fprintf(g.stdout, "nothing replicates from this node (no 'ntc replicate' has run as %s)\n", g.home())
		if store == "" {
			fmt.Fprintln(g.stdout, "give --store DIR to see what a receiver holds, --peer to ask a peer")
		}
		return
	}
	for _, r := range out.Replicating {
		fmt.Fprint(g.stdout, r.describe(now))
	}
	for _, r := range out.Received {
		fmt.Fprintf(g.stdout, "%s received: version %d of %s (%s ago), %d kept\n", r.Set, r.Version,
			r.Received.Local().Format(time.DateTime), time.Duration(r.AgeMS*float64(time.Millisecond)).Round(time.Second), r.Versions)
	}
	for _, p := range out.Peers {
		fmt.Fprint(g.stdout, p.describe(hints))
	}
}

// describe is a peer's answer in words, with the hints of its error.
func (p peerStatusJSON) describe(hints bool) string {
	var b strings.Builder
	where := p.Peer
	if p.Addr != p.Peer {
		where += ", " + p.Addr
	}
	if p.Error != "" {
		fmt.Fprintf(&b, "at %s: no answer: %s\n", where, p.Error)
		if h := hint(p.err); hints && h != "" {
			b.WriteString("  " + strings.ReplaceAll(strings.TrimSuffix(h, "\n"), "\n", "\n  ") + "\n")
		}
		return b.String()
	}
	fmt.Fprintf(&b, "at %s (answered in %.0f ms): %s\n", where, p.LatencyMS, plural(len(p.Sets), "set"))
	for _, s := range p.Sets {
		from := s.SenderName
		if from == "" {
			from = s.Sender
		}
		if from != "" {
			from = " from " + from
		}
		fmt.Fprintf(&b, "  %s: version %d of %s (%s old)%s, %s kept", s.Set, s.Version, s.Created.Local().Format(time.DateTime),
			(time.Duration(s.AgeMS) * time.Millisecond).Round(100*time.Millisecond), from, plural(int(s.Versions), "version"))
		if s.Diverged > 0 {
			fmt.Fprintf(&b, ", %d diverged", s.Diverged)
		}
		b.WriteString("\n")
	}
	return b.String()
}
