package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/rotatord/rotatord/internal/rotate"
)

// FormatHTML is a self-contained page for auditors: see writeHTML.
const FormatHTML = "html"

//go:embed html.tmpl
var htmlTemplate string

//go:embed html.css
var htmlCSS string

// htmlPage is parsed once: the template is a constant of the binary, so a
// mistake in it is a bug that must fail at startup (and in every test).
var htmlPage = template.Must(template.New("page").Funcs(template.FuncMap{
	"num": func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"add": func(a, b float64) float64 { return a + b },
}).Parse(htmlTemplate))

// Chart geometry, in SVG user units (the SVG scales to the page's width).
const (
	chartWidth   = 1000.0
	chartLabelW  = 300.0 // left column: policy / key name, right-aligned
	chartRight   = 130.0 // right margin for the age label of the longest bar
	chartRowH    = 24.0
	chartBarH    = 14.0
	chartAxisH   = 28.0 // tick labels at the top of each chunk
	chartPerSVG  = 25   // bars per SVG: one SVG fits a printed landscape page
	chartMaxBars = 500  // beyond this the chart stops and says so; the table goes on
	labelMax     = 44   // runes of a bar's label before it is cut with "…"
)

// htmlData is what html.tmpl renders. Its Summary, Warnings and Policies
// shadow the Report's with their display forms.
type htmlData struct {
	*Report
	CSS       template.CSS
	Generated string
	Summary   []htmlCount
	Chart     htmlChart
	Rows      []htmlRow
	Warnings  []string // control characters replaced
	Policies  []htmlPolicy
	// Machines is the instances section (instances.go); nil hides it.
	Machines *htmlInstances
}

type htmlCount struct {
	Status string
	Count  int
}

// htmlRow is one key in the table. The HTML table folds the key ID and
// fingerprint under the key's name and shortens times to the minute (the
// full RFC 3339 time is the <time> element's datetime): the thirteen
// columns of the text formats do not fit a printed page.
type htmlRow struct {
	Policy, Provider, Project           string
	KeyName, KeyID, Fingerprint         string
	Default                             bool
	Status, Age, MaxAge                 string
	Created, LastRotation, NextRotation htmlTime
}

// htmlTime is a time shown to the minute, with its exact value.
type htmlTime struct {
	Short, Full string
}

func newHTMLTime(t time.Time) htmlTime {
	if t.IsZero() {
		return htmlTime{}
	}
	return htmlTime{Short: t.UTC().Format("2006-01-02 15:04"), Full: stamp(t)}
}

type htmlPolicy struct {
	Name, Provider, Project, MaxAge string
	Failing                         bool
}

// htmlChart is the key-age chart: one bar per key, its length the key's
// age on a scale shared by all keys, with a marker at its policy's
// max_age. It is cut into several SVGs so that a printed page never splits
// one.
type htmlChart struct {
	Width, PlotX, PlotW float64
	LabelX, AxisY, BarH float64
	Chunks              []htmlChunk
	Shown, Omitted      int
	// Scale is the age the plot's full width stands for, a whole number
	// of ticks; Step is the age between ticks.
	Scale, Step time.Duration
}

type htmlChunk struct {
	Height float64
	Ticks  []htmlTick
	Bars   []htmlBar
}

type htmlTick struct {
	X      float64
	Label  string
	Height float64
}

type htmlBar struct {
	Y, TextY, W    float64
	AgeX           float64 // where the age label starts: past the bar and the marker
	Label, Age     string
	Title          string
	Status         string
	Marker         bool
	MarkerX        float64
	MarkerY, MarkH float64
	Unknown        bool
}

// writeHTML renders the report as one self-contained HTML page: inline CSS
// and inline SVG, no script, no external asset, no web font, so that it
// opens offline, can be mailed or archived as evidence, and prints as it
// looks (a print stylesheet keeps bar colours and table rows whole). A
// Content-Security-Policy forbids any fetch, should a future section slip
// one in. Every value is escaped by html/template; key names are chosen by
// whoever uploaded a key.
//
// Each section is one {{define}} block of html.tmpl, called in order from
// the page template; a section with nothing to show renders nothing.
func (r *Report) writeHTML(w io.Writer) error {
	d := htmlData{
		Report:    r,
		CSS:       template.CSS(htmlCSS),
		Generated: stamp(r.GeneratedAt),
		Chart:     buildChart(r.Keys),
	}
	for _, s := range statuses {
		d.Summary = append(d.Summary, htmlCount{Status: s, Count: r.Summary[s]})
	}
	d.Rows = make([]htmlRow, 0, len(r.Keys))
	for _, k := range r.Keys {
		d.Rows = append(d.Rows, htmlRow{
			Policy: clean(k.Policy), Provider: clean(k.Provider), Project: project(k.ProjectID),
			KeyName: clean(k.KeyName), KeyID: clean(k.KeyID), Fingerprint: clean(k.Fingerprint),
			Default: k.Default, Status: k.Status, Age: age(k), MaxAge: ageOf(k.MaxAgeSeconds),
			Created: newHTMLTime(k.CreatedAt), LastRotation: newHTMLTime(k.LastRotation), NextRotation: newHTMLTime(k.NextRotation),
		})
	}
	for _, m := range r.Warnings {
		d.Warnings = append(d.Warnings, clean(m))
	}
	d.Machines = r.htmlInstances()
	for _, p := range r.Policies {
		d.Policies = append(d.Policies, htmlPolicy{
			Name: clean(p.Name), Provider: clean(p.Provider), Project: project(p.ProjectID),
			MaxAge: ageOf(p.MaxAgeSeconds), Failing: p.Failing,
		})
	}
	return htmlPage.Execute(w, d)
}

// buildChart lays out the bars of the key-age chart.
func buildChart(keys []Row) htmlChart {
	c := htmlChart{
		Width: chartWidth, PlotX: chartLabelW, PlotW: chartWidth - chartLabelW - chartRight,
		LabelX: chartLabelW - 8, AxisY: chartAxisH - 6, BarH: chartBarH,
	}
	shown := keys
	if len(shown) > chartMaxBars {
		shown, c.Omitted = shown[:chartMaxBars], len(shown)-chartMaxBars
	}
	c.Shown = len(shown)
	if len(shown) == 0 {
		return c
	}
	var longest int64
	for _, k := range shown {
		longest = max(longest, k.AgeSeconds, k.MaxAgeSeconds)
	}
	span := time.Duration(longest) * time.Second
	c.Step = tickStep(span)
	// A key a little past a round number of steps does not get a whole
	// extra step of empty scale; its bar runs into the margin.
	steps := max(1, math.Ceil(float64(span)/float64(c.Step)-0.02))
	c.Scale = time.Duration(steps) * c.Step
	x := func(secs int64) float64 {
		return c.PlotX + float64(time.Duration(secs)*time.Second)/float64(c.Scale)*c.PlotW
	}

	for start := 0; start < len(shown); start += chartPerSVG {
		part := shown[start:min(start+chartPerSVG, len(shown))]
		ch := htmlChunk{Height: chartAxisH + chartRowH*float64(len(part)) + 4}
		for d := time.Duration(0); d <= c.Scale; d += c.Step {
			ch.Ticks = append(ch.Ticks, htmlTick{
				X: c.PlotX + float64(d)/float64(c.Scale)*c.PlotW, Label: tickLabel(d, c.Step), Height: ch.Height,
			})
		}
		for i, k := range part {
			y := chartAxisH + chartRowH*float64(i)
			b := htmlBar{
				Y: y + (chartRowH-chartBarH)/2, TextY: y + chartRowH/2 + 4,
				Label: barLabel(k), Status: k.Status, Unknown: k.CreatedAt.IsZero(),
				MarkerY: y + 1, MarkH: chartRowH - 2,
			}
			b.Title = fmt.Sprintf("%s: %s, %s", fullLabel(k), k.Status, ageText(k))
			if !b.Unknown {
				b.W = math.Max(x(k.AgeSeconds)-c.PlotX, 1)
			}
			b.Age = ageText(k)
			if k.MaxAgeSeconds > 0 {
				b.Marker, b.MarkerX = true, x(k.MaxAgeSeconds)
				b.Age += " / " + ageOf(k.MaxAgeSeconds)
				b.Title += " of max_age " + ageOf(k.MaxAgeSeconds)
			}
			b.AgeX = c.PlotX + b.W + 6
			if b.Marker {
				b.AgeX = math.Max(b.AgeX, b.MarkerX+6)
			}
			ch.Bars = append(ch.Bars, b)
		}
		c.Chunks = append(c.Chunks, ch)
	}
	return c
}

// tickSteps are the round ages a tick may stand for, from the seconds of
// a demo's keys to the years of a neglected account.
var tickSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	day, 2 * day, 5 * day, 7 * day, 10 * day, 14 * day, 30 * day, 60 * day, 90 * day, 180 * day,
	365 * day, 730 * day,
}

const day = 24 * time.Hour

// tickStep picks the round age between gridlines: at most about eight of
// them across span.
func tickStep(span time.Duration) time.Duration {
	for _, s := range tickSteps {
		if span <= 8*s {
			return s
		}
	}
	years := math.Ceil(float64(span) / float64(8*365*day))
	return time.Duration(years) * 365 * day
}

// tickLabel writes a tick's age in the unit of the step between ticks, so
// that one axis reads 0 15m 30m ... 120m rather than mixing units.
func tickLabel(d, step time.Duration) string {
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{day, "d"}, {time.Hour, "h"}, {time.Minute, "m"}} {
		if step%u.unit == 0 {
			return strconv.FormatInt(int64(d/u.unit), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// barLabel is "policy / key name", cut to labelMax runes: a hostile name
// must not run over the bars. The full text is in the bar's tooltip and in
// the table.
func barLabel(k Row) string {
	label := fullLabel(k)
	if utf8.RuneCountInString(label) > labelMax {
		runes := []rune(label)
		label = string(runes[:labelMax-1]) + "…"
	}
	return label
}

func fullLabel(k Row) string {
	if k.Policy == "" {
		return clean(keyLabel(k))
	}
	return clean(k.Policy) + " / " + clean(keyLabel(k))
}

func ageText(k Row) string {
	if k.CreatedAt.IsZero() {
		return "age unknown"
	}
	return rotate.FormatAge(time.Duration(k.AgeSeconds) * time.Second)
}
