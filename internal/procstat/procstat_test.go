package procstat

import "testing"

func TestPeakRSSGrows(t *testing.T) {
	before := PeakRSS(0)
	if before <= 0 {
		t.Fatalf("PeakRSS(0) = %d", before)
	}
	b := make([]byte, 64<<20)
	for i := range b {
		b[i] = 1
	}
	if after := PeakRSS(0); after < before+32<<20 {
		t.Fatalf("peak went from %d to %d after touching 64 MiB", before, after)
	}
	_ = b[len(b)-1]
}
