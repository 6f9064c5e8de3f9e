package sync

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestLevelCtl(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name       string
		start, top int
		// each batch's compression and waiting time
		comp, wait time.Duration
		batches    int
		// the bytes each batch wrote, and the fewest a decision needs
		out, minOut int
		want        int
		fixed       bool
	}{
		{"the link waits for the CPU: stays fastest", 0, 3, 10 * ms, 0, 20, 100, 0, 0, false},
		{"the CPU waits for the link: climbs to best", 0, 3, 10 * ms, 200 * ms, 20, 100, 0, len(levels) - 1, false},
		{"waiting covers better's cost, not best's", 0, 3, 10 * ms, 10 * ms, 20, 100, 0, 2, false},
		{"best is too slow for the link: steps down", len(levels) - 1, 3, 50 * ms, 1 * ms, 2, 100, 0, len(levels) - 2, false},
		{"a single batch decides nothing", 0, 3, 10 * ms, 200 * ms, 1, 100, 0, 0, false},
		{"no higher than top", 0, 1, 10 * ms, 200 * ms, 20, 100, 0, 1, false},
		{"a level chosen once stays", 2, 2, 50 * ms, 0, 20, 100, 0, 2, true},
		// Batches that fit in the write buffer wait for nothing, whatever
		// the link: they decide nothing until minOut bytes are written.
		{"batches in the buffer decide nothing", len(levels) - 1, 3, 50 * ms, 0, 9, 100, 1000, len(levels) - 1, false},
		{"with minOut bytes written it decides", len(levels) - 1, 3, 50 * ms, 0, 10, 100, 1000, len(levels) - 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := levelCtl{level: tt.start, top: tt.top, fixed: tt.fixed, minOut: tt.minOut}
			got := c.level
			for range tt.batches {
				got = c.observe(tt.comp, tt.wait, tt.out)
			}
			if got != tt.want {
				t.Errorf("level %s after %d batches, want %s", levels[got], tt.batches, levels[tt.want])
			}
		})
	}
}

func TestLevelRange(t *testing.T) {
	best := len(levels) - 1
	tests := []struct {
		rtt        time.Duration
		cap        int64
		first, top int
	}{
		{100 * time.Microsecond, 0, 0, 1},
		{40 * time.Millisecond, 0, best, best},
		{100 * time.Microsecond, 2 << 20, best, best},
		{40 * time.Millisecond, 100 << 20, best, best},
	}
	for _, tt := range tests {
		if first, top := levelRange(tt.rtt, tt.cap); first != tt.first || top != tt.top {
			t.Errorf("levelRange(%v, %d) = %s..%s, want %s..%s", tt.rtt, tt.cap, levels[first], levels[top], levels[tt.first], levels[tt.top])
		}
	}
}

// A small round goes at the best level where the link is the limit (a
// long or capped path), below it on a short uncapped one.
func TestSmallLevel(t *testing.T) {
	best := len(levels) - 1
	tests := []struct {
		rtt  time.Duration
		cap  int64
		n    int64 // the round's bytes
		want int
	}{
		{100 * time.Microsecond, 0, 8 << 20, smallShortLevel},
		{40 * time.Millisecond, 0, 8 << 20, best},
		{40 * time.Millisecond, 0, smallBestFrom - 1, smallShortLevel},
		{40 * time.Millisecond, 0, 1 << 20, smallShortLevel},
		{100 * time.Microsecond, 2 << 20, smallBestFrom, best},
		{100 * time.Microsecond, 2 << 20, 100 << 10, smallShortLevel},
		{100 * time.Microsecond, 100 << 20, 8 << 20, smallShortLevel},
	}
	for _, tt := range tests {
		if got := smallLevel(tt.rtt, tt.cap, tt.n); got != tt.want {
			t.Errorf("smallLevel(%v, %d, %d) = %s, want %s", tt.rtt, tt.cap, tt.n, levels[got], levels[tt.want])
		}
	}
	if smallShortLevel >= best {
		t.Errorf("a small round on a short path goes at %s", levels[smallShortLevel])
	}
}

// textData is compressible data with repeats at all distances, as files
// are: words drawn from a small vocabulary.
func textData(r *rand.Rand, n int) []byte {
	words := strings.Fields("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three")
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[int(r.ExpFloat64()*20)%len(words)])
		if r.IntN(12) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return []byte(b.String()[:n])
}

// A higher level sends fewer bytes of the same chunks, and the receiver
// takes what every level writes.
func TestLevelsChangeTheBytesNotTheVersion(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	images := map[string][]byte{"disk": textData(r, 4<<20)}
	var sent [len(levels)]int64
	for l := range levels {
		p := newPeers(t)
		s := &Sender{StateDir: t.TempDir(), level: &l}
		res, err := p.push(t, t.Context(), s, imageVersion(t, "vm", images))
		if err != nil {
			t.Fatalf("level %s: %v", levels[l], err)
		}
		assertMaterialized(t, p.repo, "vm", images)
		if got := res.Compressed[levels[l].String()]; got != res.ChunkBytes {
			t.Errorf("level %s: %d of %d chunk bytes compressed at that level (%v)", levels[l], got, res.ChunkBytes, res.Compressed)
		}
		sent[l] = res.DataBytes
	}
	t.Logf("data bytes by level: %v", sent)
	if sent[len(levels)-1] >= sent[0] {
		t.Errorf("best level sent %d bytes, fastest %d", sent[len(levels)-1], sent[0])
	}
}
