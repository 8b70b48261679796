package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
)

// auditHead is a realistic audit head for the report's last section.
const auditHead = "4182:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func writeHTML(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.Write(&b, FormatHTML); err != nil {
		t.Fatalf("Write html: %v", err)
	}
	return b.String()
}

func TestReport_WriteHTML(t *testing.T) {
	r := newFixture(t).generate(t)
	r.AuditHead = auditHead
	page := writeHTML(t, r)

	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(page, -1)) }
	if n := count(`<g class="key `); n != len(r.Keys) {
		t.Errorf("chart has %d bars, want one per key (%d)", n, len(r.Keys))
	}
	if n := count(`<line class="limit"`); n != 8 {
		t.Errorf("chart has %d max_age marks, want 8 (every key of a configured policy)", n)
	}
	if n := count(`<tr class="`); n != len(r.Keys) {
		t.Errorf("keys table has %d rows, want %d", n, len(r.Keys))
	}
	for _, s := range statuses {
		want := fmt.Sprintf(`<li class="count %s`, s)
		if !strings.Contains(page, want) {
			t.Errorf("summary has no %s count", s)
		}
	}
	for _, want := range []string{
		`<h2>Audit log</h2>`, `<code>` + auditHead + `</code>`, `-expect-head ` + auditHead,
		`<time datetime="2026-03-17T03:00:00Z" title="2026-03-17T03:00:00Z">2026-03-17 03:00</time>`,
		`<title>batch / batch-20260317T030000: overdue, 45d of max_age 30d</title>`,
		`<h2>Warnings</h2>`, `<span class="badge failing">failing</span>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page has no %s", want)
		}
	}
	// Self-contained: nothing that loads or runs anything.
	for _, bad := range []string{"<script", "<img", "<link rel=\"stylesheet", "@import", "url(", "http://", "https://", "@font-face"} {
		if bad == "http://" {
			// The SVG namespace is a name, not a fetch.
			if strings.Count(page, bad) != strings.Count(page, `xmlns="http://www.w3.org/2000/svg"`) {
				t.Errorf("page refers to an http:// URL")
			}
			continue
		}
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must be self-contained", bad)
		}
	}

	t.Run("sections without data are left out", func(t *testing.T) {
		empty := &Report{GeneratedAt: now, Keys: []Row{}, Summary: map[string]int{}}
		page := writeHTML(t, empty)
		for _, absent := range []string{`id="chart"`, `id="audit"`, `id="warnings"`, `id="policies"`, "<svg"} {
			if strings.Contains(page, absent) {
				t.Errorf("empty report has %s", absent)
			}
		}
		if !strings.Contains(page, "No key on any provider account.") || !strings.Contains(page, "0 keys on the provider accounts of 0 policies") {
			t.Error("empty report does not say it has no key")
		}
	})
}

// TestReport_WriteHTMLEscapes: key names and warnings are provider data
// that anyone who can upload a key chooses; none may become markup.
func TestReport_WriteHTMLEscapes(t *testing.T) {
	f := newFixture(t)
	p := f.providers["sesterce-prod"].(*fakeProvider)
	hostile := []string{
		`<script>alert(1)</script>`,
		`"><img src=x onerror=alert(2)>`,
		`</text></svg><iframe src=//evil>`,
		"x\x1b[31m\x00y",
		`gpu-team-20260426T030000<style>*{display:none}</style>`,
	}
	for i, name := range hostile {
		p.keys[0] = append(p.keys[0], cloud.Key{ID: fmt.Sprintf("evil-%d", i), Name: name, CreatedAt: now.Add(-time.Duration(i+1) * day)})
	}
	r := f.generate(t)
	r.Warnings = append(r.Warnings, `provider said <b>no</b> & "quit"`)
	page := writeHTML(t, r)
	for _, bad := range []string{"<script", "<img", "<iframe", "</svg><", "\x1b", "\x00", "<style>*", "<b>no</b>"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q from provider data", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "provider said &lt;b&gt;no&lt;/b&gt; &amp; &#34;quit&#34;"} {
		if !strings.Contains(page, want) {
			t.Errorf("page does not show the escaped text %s", want)
		}
	}
}

// TestBuildChart checks the chart's layout rules: a shared scale with
// round ticks, one SVG per chartPerSVG bars so print never splits one, and
// a cap with a caption beyond chartMaxBars.
func TestBuildChart(t *testing.T) {
	row := func(age, maxAge time.Duration) Row {
		return Row{Policy: "p", KeyName: "k", Status: StatusOK, CreatedAt: now.Add(-age),
			AgeSeconds: int64(age / time.Second), MaxAgeSeconds: int64(maxAge / time.Second)}
	}
	t.Run("scale", func(t *testing.T) {
		c := buildChart([]Row{row(45*day, 30*day), row(10*day, 90*day), row(180*day+3*time.Hour, 0)})
		if c.Scale != 180*day || len(c.Chunks) != 1 {
			t.Fatalf("scale %v in %d chunks, want 180 days in 1", c.Scale, len(c.Chunks))
		}
		var ticks []string
		for _, tk := range c.Chunks[0].Ticks {
			ticks = append(ticks, tk.Label)
		}
		if got := strings.Join(ticks, " "); got != "0d 30d 60d 90d 120d 150d 180d" {
			t.Errorf("ticks = %s", got)
		}
		bars := c.Chunks[0].Bars
		if bars[0].W != c.PlotW*45/180 || bars[0].MarkerX != c.PlotX+c.PlotW*30/180 || !bars[0].Marker {
			t.Errorf("bar 0: width %v marker %v, want %v and %v", bars[0].W, bars[0].MarkerX, c.PlotW/4, c.PlotX+c.PlotW/6)
		}
		if bars[2].Marker || bars[2].Age != "180d" {
			t.Errorf("a key of no policy: marker %v, age %q; want no marker and its age alone", bars[2].Marker, bars[2].Age)
		}
	})
	// A demo's keys live seconds, a fleet's months: the scale follows the
	// ages shown, and a tick names its age in the unit that fits.
	t.Run("short ages", func(t *testing.T) {
		for _, tc := range []struct {
			rows  []Row
			scale time.Duration
			ticks string
		}{
			{[]Row{row(41*time.Second, 30*time.Second), row(2*time.Second, 30*time.Second)}, 50 * time.Second, "0s 10s 20s 30s 40s 50s"},
			{[]Row{row(50*time.Minute, 2*time.Hour)}, 2 * time.Hour, "0m 15m 30m 45m 60m 75m 90m 105m 120m"},
			{[]Row{row(20*time.Hour, 0)}, 21 * time.Hour, "0h 3h 6h 9h 12h 15h 18h 21h"},
		} {
			c := buildChart(tc.rows)
			var ticks []string
			for _, tk := range c.Chunks[0].Ticks {
				ticks = append(ticks, tk.Label)
			}
			if c.Scale != tc.scale || strings.Join(ticks, " ") != tc.ticks {
				t.Errorf("scale %v ticks %q, want %v and %q", c.Scale, strings.Join(ticks, " "), tc.scale, tc.ticks)
			}
			// The oldest key's bar, or the furthest max_age mark, spans
			// most of the plot: nothing is a sliver at the left edge.
			var furthest float64
			for _, b := range c.Chunks[0].Bars {
				furthest = max(furthest, b.W, b.MarkerX-c.PlotX)
			}
			if furthest < c.PlotW*3/4 {
				t.Errorf("scale %v: the furthest bar or mark reaches %.0f of %.0f units", c.Scale, furthest, c.PlotW)
			}
		}
	})
	t.Run("unknown age", func(t *testing.T) {
		c := buildChart([]Row{{KeyName: "k", Status: StatusUnmanaged}})
		if b := c.Chunks[0].Bars[0]; !b.Unknown || b.W != 0 || b.Age != "age unknown" {
			t.Errorf("bar of a key without creation time = %+v", b)
		}
	})
	t.Run("long label", func(t *testing.T) {
		r := row(day, 30*day)
		r.KeyName = strings.Repeat("ключ", 30)
		b := buildChart([]Row{r}).Chunks[0].Bars[0]
		if n := len([]rune(b.Label)); n != labelMax || !strings.HasSuffix(b.Label, "…") || !strings.Contains(b.Title, r.KeyName) {
			t.Errorf("label %q (%d runes), title %q: want %d runes ending in … and the full name in the title", b.Label, n, b.Title, labelMax)
		}
	})
	t.Run("chunks and cap", func(t *testing.T) {
		rows := make([]Row, chartMaxBars+100)
		for i := range rows {
			rows[i] = row(time.Duration(i)*time.Hour, 30*day)
		}
		c := buildChart(rows)
		bars := 0
		for _, ch := range c.Chunks {
			if len(ch.Bars) > chartPerSVG {
				t.Fatalf("a chunk holds %d bars, more than %d", len(ch.Bars), chartPerSVG)
			}
			bars += len(ch.Bars)
		}
		if bars != chartMaxBars || c.Shown != chartMaxBars || c.Omitted != 100 || len(c.Chunks) != chartMaxBars/chartPerSVG {
			t.Errorf("%d bars in %d chunks, shown %d omitted %d", bars, len(c.Chunks), c.Shown, c.Omitted)
		}
		page := writeHTML(t, &Report{GeneratedAt: now, Keys: rows, Summary: map[string]int{}})
		if !strings.Contains(page, "The chart stops after 500 keys; the 100 more are in the table.") {
			t.Error("capped chart does not say so")
		}
	})
}

// TestReport_WriteJSONAuditHead: the audit head, once state fills it, is
// in the JSON document exactly where encoding/json puts it.
func TestReport_WriteJSONAuditHead(t *testing.T) {
	full := newFixture(t).generate(t)
	for _, r := range []*Report{
		{GeneratedAt: now, Keys: full.Keys, Summary: full.Summary, Policies: full.Policies, Warnings: full.Warnings, AuditHead: auditHead},
		{GeneratedAt: now, Keys: full.Keys, Summary: full.Summary, Policies: full.Policies, AuditHead: auditHead},
	} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := r.Write(&got, FormatJSON); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("streamed JSON differs from encoding/json:\n--- got\n%s\n--- want\n%s", got.String(), want.String())
		}
		if !strings.Contains(got.String(), `"audit_head": "`+auditHead+`"`) {
			t.Error("JSON has no audit_head")
		}
	}
}
