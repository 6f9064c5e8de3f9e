package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ntc-project/ntc/bench/debimg"
)

func TestMarkdownRatiosAndNotes(t *testing.T) {
	cases := []Case{
		{Scenario: "vm-busy", Profile: "dsl", Tool: ToolNTC, WireBytes: 10e6, Wall: 5 * time.Second, Limit: 4 * time.Second,
			CPUSender: time.Second, CPUReceiver: 2 * time.Second, MemSender: 20 << 20, MemReceiver: 30 << 20},
		{Scenario: "vm-busy", Profile: "dsl", Tool: ToolRsyncZ, WireBytes: 40e6, Wall: 20 * time.Second, Limit: 4 * time.Second},
		{Scenario: "vm-busy", Profile: "dsl", Tool: ToolFullZstd, WireBytes: 100e6, Wall: 50 * time.Second, Limit: 4 * time.Second},
		{Scenario: "vm-busy", Profile: "dsl", Tool: ToolMigrate, WireBytes: 200e6, Wall: 80 * time.Second, Limit: 4 * time.Second,
			Note: "guest paused to finish"},
		{Scenario: "vm-busy", Profile: "dsl", Tool: ToolRsync, Err: "rsync: exit status 12:\nconnection | reset\n"},
	}
	var b bytes.Buffer
	Markdown(&b, cases)
	out := b.String()
	for _, want := range []string{
		"| vm-busy | dsl | ntc | 10.00 | 5.00 | 4.00 | 1.25 | 0.25 | 0.25 | 0.10 | 1.00/2.00 | 20/30 |",
		"| vm-busy | dsl | qemu migrate [1] | 200.00 | 80.00 | 4.00 | 20.00 | 5.00 | 4.00 | 2.00 | – | – |",
		"| vm-busy | dsl | rsync | failed: rsync: exit status 12: connection / reset |",
		"[1] vm-busy, dsl, qemu migrate: guest paused to finish\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
}

// TestMarkdownDedupOracle: a scenario with a dedup oracle gets a line
// with every tool's wire bytes as a ratio to it; others get none.
func TestMarkdownDedupOracle(t *testing.T) {
	cases := []Case{
		{Scenario: "debian", Profile: "dsl", Tool: ToolNTC, WireBytes: 55e6, DedupBytes: 50e6},
		{Scenario: "debian", Profile: "dsl", Tool: ToolRsyncZ, WireBytes: 90e6, DedupBytes: 50e6},
		{Scenario: "debian", Profile: "wan", Tool: ToolNTC, Err: "failed"},
		{Scenario: "random-1pct", Profile: "dsl", Tool: ToolNTC, WireBytes: 2e6},
	}
	var b bytes.Buffer
	Markdown(&b, cases)
	out := b.String()
	want := "debian, wire bytes / dedup oracle (50.00 MB: the 4 KiB blocks found nowhere in the old image, zstd -3 as one stream): ntc dsl 1.10, rsync -z dsl 1.80\n"
	if !strings.Contains(out, want) || strings.Count(out, "dedup oracle") != 1 {
		t.Errorf("want one dedup line %q:\n%s", want, out)
	}
}

func TestAppliesKeepsMigrationToVMs(t *testing.T) {
	img, vm := &Scenario{Name: "random-1pct"}, &Scenario{Name: ScenarioVMIdle, VM: &VMState{}}
	for _, tc := range []struct {
		tool   string
		sc     *Scenario
		expect bool
	}{
		{ToolMigrate, img, false}, {ToolMigrate, vm, true},
		{ToolNTCChanged, img, true}, {ToolNTCChanged, vm, false},
		{ToolNTC, vm, true}, {ToolRsyncZ, vm, true}, {ToolFullZstd, img, true},
	} {
		if got := applies(tc.tool, tc.sc); got != tc.expect {
			t.Errorf("applies(%s, %s) = %v", tc.tool, tc.sc.Name, got)
		}
	}
}

func TestChangedBlocks(t *testing.T) {
	const bs = debimg.BlockSize
	old := bytes.Repeat([]byte{1}, 10*bs+100)
	new := bytes.Clone(old)
	new[0] = 2        // block 0
	new[3*bs+5] = 2   // block 3
	new[4*bs] = 2     // block 4: merged with 3
	new[10*bs+99] = 2 // the short last block
	for _, tc := range []struct {
		name string
		old  []byte
		want []debimg.Range
	}{
		{"same size", old, []debimg.Range{{Off: 0, Len: bs}, {Off: 3 * bs, Len: 2 * bs}, {Off: 10 * bs, Len: 100}}},
		{"no old", nil, []debimg.Range{{Off: 0, Len: 10*bs + 100}}},
		{"shorter old", old[:5*bs], []debimg.Range{{Off: 0, Len: bs}, {Off: 3 * bs, Len: 7*bs + 100}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o *bytes.Reader
			if tc.old != nil {
				o = bytes.NewReader(tc.old)
			}
			var oa interface {
				ReadAt([]byte, int64) (int, error)
			}
			if o != nil {
				oa = o
			}
			got, err := changedBlocks(context.Background(), oa, bytes.NewReader(new), int64(len(new)))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestOopsQuotesWhyTheKernelDied(t *testing.T) {
	if got := oops([]string{"tick 3", "tick 4"}); got != "" {
		t.Errorf("a healthy console gave %q", got)
	}
	got := oops([]string{"tick 70", "[   68.3] BUG: unable to handle page fault for address: 0", "[   68.3] RIP: 0010:memset+0x9",
		"[   68.4] Kernel panic - not syncing: Fatal exception"})
	want := " (kernel: [   68.3] BUG: unable to handle page fault for address: 0 / [   68.3] RIP: 0010:memset+0x9 / [   68.4] Kernel panic - not syncing: Fatal exception)"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
