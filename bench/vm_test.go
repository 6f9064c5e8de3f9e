package bench

import (
	"os"
	"testing"
	"time"

	"github.com/ntc-project/ntc/bench/link"
	"github.com/ntc-project/ntc/internal/testguest/guesttest"
)

// TestVMScenarioAndQEMUMigration checkpoints the idle test guest twice,
// checks the files the baselines send, then migrates the guest restored
// from the second checkpoint across a lan link with QEMU itself.
func TestVMScenarioAndQEMUMigration(t *testing.T) {
	guesttest.SkipIfNoQEMU(t)
	if err := link.Available(); err != nil {
		t.Skip(err)
	}
	bin := buildNTC(t)
	dir := t.TempDir()
	sc, err := PrepareVM(t.Context(), ScenarioVMIdle, dir, bin, VMOptions{Work: 2 * time.Second, Progress: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	st := sc.VM
	if st.Seq2 <= st.Seq1 || st.RAMNonZero <= 0 || st.RAMNonZero > st.RAMBytes {
		t.Fatalf("checkpoints %d, %d; %d of %d RAM bytes are data", st.Seq1, st.Seq2, st.RAMNonZero, st.RAMBytes)
	}
	if len(sc.Files) != 2 || sc.Files[0].Name != streamFile {
		t.Fatalf("files %+v: want the stream and one disk", sc.Files)
	}
	for _, f := range sc.Files {
		for _, p := range []string{f.Old, f.New} {
			if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
				t.Fatalf("%s: %v", p, err)
			}
		}
	}
	// The guest ticked between the checkpoints: its disk's first sector
	// and some RAM changed, and both compress.
	if sc.ChangedBytes < 4096 || sc.Oracle <= 0 || sc.Oracle > sc.ChangedBytes {
		t.Fatalf("changed %d bytes, %d compressed", sc.ChangedBytes, sc.Oracle)
	}
	p, err := link.ProfileByName("lan")
	if err != nil {
		t.Fatal(err)
	}
	l, err := link.Up(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := Case{Tool: ToolMigrate}
	before := l.Stats()
	if err := runMigrate(t.Context(), l, sc, t.TempDir(), &c); err != nil {
		t.Fatal(err)
	}
	after := l.Stats()
	wire := after.AB.Bytes - before.AB.Bytes
	// QEMU sends every page of data at least once.
	if wire < st.RAMNonZero || c.Wall <= 0 || c.Note == "" {
		t.Fatalf("migration moved %d bytes A→B for %d bytes of RAM data, in %s (%s)", wire, st.RAMNonZero, c.Wall, c.Note)
	}
	t.Logf("%d bytes, %s: %s", wire, c.Wall, c.Note)
}
