package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// find returns the case of tool in the same scenario and link as c.
func find(cases []Case, c Case, tool string) *Case {
	for i := range cases {
		x := &cases[i]
		if x.Scenario == c.Scenario && x.Profile == c.Profile && x.Tool == tool && x.Err == "" {
			return x
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b <= 0 || a <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// Markdown writes the results as a table: one row per case, with the
// ratios to the physical limit, to rsync -z and to a full copy.
func Markdown(w io.Writer, cases []Case) {
	fmt.Fprintln(w, "| scenario | link | tool | wire MB | time s | limit s | time/limit | bytes/rsync -z | time/rsync -z | bytes/full | CPU snd/rcv s | mem snd/rcv MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	var notes []Case
	for _, c := range cases {
		if c.Err != "" {
			fmt.Fprintf(w, "| %s | %s | %s | failed: %s |||||||||\n", c.Scenario, c.Profile, c.Tool, strings.Join(strings.Fields(strings.ReplaceAll(c.Err, "|", "/")), " "))
			continue
		}
		rz, full := find(cases, c, ToolRsyncZ), find(cases, c, ToolFullZstd)
		var rzB, rzT, fullB float64
		if rz != nil {
			rzB, rzT = float64(rz.WireBytes), float64(rz.Wall)
		}
		if full != nil {
			fullB = float64(full.WireBytes)
		}
		cpu, mem := secs(c.CPUSender)+"/"+secs(c.CPUReceiver), fmt.Sprintf("%.0f/%.0f", float64(c.MemSender)/(1<<20), float64(c.MemReceiver)/(1<<20))
		if c.Tool == ToolMigrate {
			cpu, mem = "–", "–" // QEMU's CPU and memory are the guest's
		}
		tool := c.Tool
		if c.Note != "" {
			notes = append(notes, c)
			tool += fmt.Sprintf(" [%d]", len(notes))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			c.Scenario, c.Profile, tool, float64(c.WireBytes)/1e6, secs(c.Wall), secs(c.Limit),
			ratio(float64(c.Wall), float64(c.Limit)), ratio(float64(c.WireBytes), rzB), ratio(float64(c.Wall), rzT),
			ratio(float64(c.WireBytes), fullB), cpu, mem)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
	for i, c := range notes {
		fmt.Fprintf(w, "[%d] %s, %s, %s: %s\n", i+1, c.Scenario, c.Profile, c.Tool, c.Note)
	}
	dedupLines(w, cases)
}

// dedupLines writes, for each scenario with a dedup oracle, every tool's
// wire bytes as a ratio to it.
func dedupLines(w io.Writer, cases []Case) {
	var done []string
	for _, c := range cases {
		if c.DedupBytes <= 0 || slices.Contains(done, c.Scenario) {
			continue
		}
		done = append(done, c.Scenario)
		var parts []string
		for _, x := range cases {
			if x.Scenario == c.Scenario && x.Err == "" {
				parts = append(parts, fmt.Sprintf("%s %s %s", x.Tool, x.Profile, ratio(float64(x.WireBytes), float64(c.DedupBytes))))
			}
		}
		fmt.Fprintf(w, "\n%s, wire bytes / dedup oracle (%.2f MB: the 4 KiB blocks found nowhere in the old image, zstd -3 as one stream): %s\n",
			c.Scenario, float64(c.DedupBytes)/1e6, strings.Join(parts, ", "))
	}
}

// JSON writes the cases as a JSON array.
func JSON(w io.Writer, cases []Case) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(cases)
}

// SVG draws, per scenario and link, the tools' times side by side as bars
// on a logarithmic scale, with the physical limit as a line.
func SVG(w io.Writer, cases []Case) {
	type group struct {
		name  string
		limit time.Duration
		bars  []Case
	}
	var groups []*group
	index := map[string]*group{}
	for _, c := range cases {
		key := c.Scenario + " / " + c.Profile
		g := index[key]
		if g == nil {
			g = &group{name: key, limit: c.Limit}
			index[key] = g
			groups = append(groups, g)
		}
		g.bars = append(g.bars, c)
	}
	const barW, gap, height, top, left = 22, 30, 260, 40, 60
	colors := map[string]string{ToolNTC: "#1f77b4", ToolNTCChanged: "#17becf", ToolRsyncZ: "#d62728", ToolRsync: "#ff9896", ToolFullZstd: "#7f7f7f", ToolMigrate: "#9467bd"}
	maxT, minT := 1e-3, math.Inf(1)
	for _, c := range cases {
		if c.Err == "" {
			maxT = math.Max(maxT, c.Wall.Seconds())
			minT = math.Min(minT, math.Max(c.Wall.Seconds(), 1e-3))
		}
		minT = math.Min(minT, math.Max(c.Limit.Seconds(), 1e-3))
	}
	lo, hi := math.Floor(math.Log10(minT)), math.Ceil(math.Log10(maxT))
	if hi <= lo {
		hi = lo + 1
	}
	y := func(s float64) float64 {
		return top + height - (math.Log10(math.Max(s, 1e-3))-lo)/(hi-lo)*height
	}
	width := left + len(groups)*(len(AllTools)*barW+gap) + 160
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, top+height+90)
	fmt.Fprintf(w, `<text x="%d" y="20" font-size="14">Time to send the new version (seconds, log scale); black line: physical limit</text>`+"\n", left)
	for e := lo; e <= hi; e++ {
		yy := y(math.Pow(10, e))
		fmt.Fprintf(w, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n",
			left, width-160, yy, yy, left-4, yy+4, math.Pow(10, e))
	}
	x := left + gap/2
	for _, g := range groups {
		x0 := x
		for _, c := range g.bars {
			if c.Err == "" {
				yy := y(c.Wall.Seconds())
				fmt.Fprintf(w, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s: %.2f s, %.2f MB</title></rect>`+"\n",
					x, yy, barW-2, top+height-yy, colors[c.Tool], html.EscapeString(c.Tool), c.Wall.Seconds(), float64(c.WireBytes)/1e6)
			}
			x += barW
		}
		ly := y(g.limit.Seconds())
		fmt.Fprintf(w, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="black" stroke-width="2"/>`+"\n", x0-2, x, ly, ly)
		sc, ln, _ := strings.Cut(g.name, " / ")
		fmt.Fprintf(w, `<text x="%d" y="%d">%s</text><text x="%d" y="%d">%s</text>`+"\n",
			x0, top+height+16, html.EscapeString(sc), x0, top+height+30, html.EscapeString(ln))
		x += gap
	}
	for i, t := range AllTools {
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			width-150, top+i*18, colors[t], width-132, top+i*18+10, html.EscapeString(t))
	}
	fmt.Fprintln(w, "</svg>")
}
