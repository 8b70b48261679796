package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/report"
)

// exportedMetrics returns every metric name rotatord's /metrics can serve:
// the registry of daemon.NewMetrics with the report collector registered
// on it, as internal/daemon/app.go does when metrics.listen is set. Names
// come from Describe (which lists a vector even before it has a child)
// and from Gather (which names the samples of histograms and summaries).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := daemon.NewMetrics().Registry()
	reg.MustRegister(report.NewCollector(func() (*report.Report, error) {
		return &report.Report{
			Keys:     []report.Row{{Policy: "gpu", Provider: "sesterce-prod", KeyID: "k1", Status: report.StatusOK, AgeSeconds: 60}},
			Policies: []report.PolicyInfo{{Name: "gpu", Provider: "sesterce-prod", MaxAgeSeconds: 3600}},
			Summary:  map[string]int{report.StatusOK: 1},
		}, nil
	}))
	return registryNames(t, reg)
}

// descName reads the metric name out of a Desc. client_golang has no
// accessor for it; its String form has been Desc{fqName: "NAME", ...}
// since v0.9, and a change of that form fails the test loudly below.
var descName = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

func registryNames(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	for d := range ch {
		m := descName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the metric name of %s: has client_golang's Desc.String changed?", d)
		}
		names[m[1]] = true
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		switch mf.GetType().String() {
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			names[mf.GetName()+"_bucket"] = true
			fallthrough
		case "SUMMARY":
			names[mf.GetName()+"_sum"] = true
			names[mf.GetName()+"_count"] = true
		}
	}
	if !names["rotatord_keys"] || !names["rotatord_rotations_total"] {
		t.Fatalf("the registry does not look like rotatord's: %v", sortedKeys(names))
	}
	return names
}

// scrapeMetrics are the series Prometheus itself writes for every target.
var scrapeMetrics = map[string]bool{
	"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true,
	"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
}

// promqlWords are PromQL's keywords, aggregation modifiers and the
// functions that may be written without a following "(" on this tokenizer's
// view. Anything else that is not followed by "(" is a metric name.
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
	"atan2": true, "start": true, "end": true,
}

var (
	grafanaVar    = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	stringLit     = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	labelMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	labelLists    = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	rangeSel      = regexp.MustCompile(`\[[^\[\]]*\]`)
	token         = regexp.MustCompile(`[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*`)
)

// metricNames returns the metric names a PromQL expression reads. It is a
// tokenizer, not a parser (the syntax itself is checked by promtool in
// TestDashboard_queriesParse): it drops Grafana variables, strings, label
// matchers, by/on label lists and range selectors, then takes every
// identifier that is not a keyword and not a function call.
func metricNames(expr string) []string {
	s := grafanaVar.ReplaceAllString(expr, " ")
	s = stringLit.ReplaceAllString(s, `""`)
	s = labelMatchers.ReplaceAllString(s, " ")
	s = labelLists.ReplaceAllString(s, " ")
	s = rangeSel.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range token.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || promqlWords[strings.ToLower(tok)] {
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	return out
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		name, expr string
		want       []string
	}{
		{"bare name", `up`, []string{"up"}},
		{"label matchers and variables", `rotatord_keys{status="overdue", job=~"$job"} > 0`, []string{"rotatord_keys"}},
		{"label lists of by, on and group_left",
			`max by (policy) (rotatord_key_age_seconds{policy=~"$policy"}) / on (policy) group_left max(rotatord_key_max_age_seconds) by (policy)`,
			[]string{"rotatord_key_age_seconds", "rotatord_key_max_age_seconds"}},
		{"range selector with a variable", `sum by (result) (increase(rotatord_rotations_total[$__rate_interval])) or vector(0)`, []string{"rotatord_rotations_total"}},
		{"offset and a function without arguments", `time() - rotatord_last_rotation_success_timestamp_seconds offset 5m`, []string{"rotatord_last_rotation_success_timestamp_seconds"}},
		{"numbers, bool and absent", `histogram_quantile(0.9, rate(go_gc_duration_seconds_bucket[5m])) and on() absent(nope_total) == bool 1e3`,
			[]string{"go_gc_duration_seconds_bucket", "nope_total"}},
		{"string arguments", `label_replace(rotatord_keys, "x", "$1", "status", "(.*)")`, []string{"rotatord_keys"}},
		{"__name__ matcher is not read (such a query fails as naming no metric)", `{__name__="rotatord_keys"}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
				t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
}

// checkNames returns the names in names that rotatord does not export.
func checkNames(exported map[string]bool, names []string) (missing []string) {
	for _, n := range names {
		if !exported[n] && !scrapeMetrics[n] {
			missing = append(missing, n)
		}
	}
	return missing
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// dashboard is the part of Grafana's JSON model the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	ID            *int    `json:"id"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string           `json:"name"`
			Type       string           `json:"type"`
			Query      any              `json:"query"`
			Definition string           `json:"definition"`
			Datasource *datasourceRef   `json:"datasource"`
			Current    map[string]any   `json:"current"`
			Options    []map[string]any `json:"options"`
		} `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	GridPos    map[string]int `json:"gridPos"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/rotatord.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/rotatord.json: %v", err)
	}
	return d
}

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	where string
	expr  string
}

var labelValues = regexp.MustCompile(`^label_values\((?:(.*),)?\s*(\w+)\s*\)$`)

// queries lists every PromQL expression of the dashboard: each panel
// target and each query variable (label_values(METRIC, LABEL) reads
// METRIC).
func (d dashboard) queries(t *testing.T) []query {
	t.Helper()
	var out []query
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		} else if s, ok := v.Query.(string); ok {
			q = s
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(METRIC, LABEL)", v.Name, q)
			continue
		}
		if m[1] == "" {
			t.Errorf("variable %s: label_values(%s) names no metric; it would read every series", v.Name, m[2])
			continue
		}
		out = append(out, query{"variable " + v.Name, m[1]})
	}
	return out
}

// Every metric a dashboard query reads is one rotatord exports (or one
// Prometheus writes for each target). A panel over a renamed or removed
// metric shows "No data" forever; this makes it a test failure instead.
func TestDashboard_namesOnlyExportedMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	qs := readDashboard(t).queries(t)
	if len(qs) < 10 {
		t.Fatalf("found %d queries in the dashboard; the tokenizer or the JSON layout is off", len(qs))
	}
	read := map[string]bool{}
	for _, q := range qs {
		names := metricNames(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", q.where, q.expr)
		}
		for _, n := range names {
			read[n] = true
		}
		if missing := checkNames(exported, names); len(missing) > 0 {
			t.Errorf("%s reads %v, which rotatord does not export (exported: %v)", q.where, missing, rotatordOnly(exported))
		}
	}
	// The dashboard covers the metrics of DESIGN.md §8.
	for _, n := range []string{"rotatord_key_age_seconds", "rotatord_key_max_age_seconds", "rotatord_rotations_total",
		"rotatord_last_rotation_success_timestamp_seconds", "rotatord_keys", "rotatord_config_last_reload_successful"} {
		if !read[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}

func rotatordOnly(m map[string]bool) []string {
	var out []string
	for _, n := range sortedKeys(m) {
		if strings.HasPrefix(n, "rotatord_") {
			out = append(out, n)
		}
	}
	return out
}

// The check above would pass on a registry that exports everything; this
// shows it fails when a metric a panel reads is not exported.
func TestDashboard_missingMetricIsCaught(t *testing.T) {
	exported := exportedMetrics(t)
	delete(exported, "rotatord_last_rotation_success_timestamp_seconds")
	var caught []string
	for _, q := range readDashboard(t).queries(t) {
		caught = append(caught, checkNames(exported, metricNames(q.expr))...)
	}
	if !slices.Contains(caught, "rotatord_last_rotation_success_timestamp_seconds") {
		t.Fatalf("removing rotatord_last_rotation_success_timestamp_seconds from the registry went unnoticed (caught %v)", caught)
	}
}

// The dashboard imports as is: no fixed numeric id, a stable uid, a
// datasource variable every panel and target uses, a unique id and a
// position for every panel.
func TestDashboard_importable(t *testing.T) {
	d := readDashboard(t)
	if d.ID != nil {
		t.Errorf("id = %d; an importable dashboard has id null", *d.ID)
	}
	if d.UID != "rotatord" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	var hasDS bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not use the datasource variable", v.Name)
		}
		if len(v.Current) > 0 || len(v.Options) > 0 {
			t.Errorf("variable %s carries a current value or options from someone's Grafana", v.Name)
		}
	}
	if !hasDS {
		t.Error("no datasource variable of type prometheus")
	}
	ids := map[int]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if other, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, other)
			}
			ids[p.ID] = p.Title
			if p.Title == "" || p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
				t.Errorf("panel %d: title %q, gridPos %v", p.ID, p.Title, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("panel %d %q: datasource %v, %d targets", p.ID, p.Title, p.Datasource, len(p.Targets))
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" || tg.RefID == "" || refs[tg.RefID] || tg.Expr == "" {
					t.Errorf("panel %d %q: target %+v", p.ID, p.Title, tg)
				}
				refs[tg.RefID] = true
			}
		}
	}
	walk(d.Panels)
}

// grafanaDefaults stand in for Grafana's variables when promtool parses a
// dashboard query.
var grafanaDefaults = map[string]string{
	"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600", "__range_ms": "3600000",
}

// Every dashboard query is valid PromQL: promtool parses each one as a
// recording rule, with Grafana's variables given typical values.
func TestDashboard_queriesParse(t *testing.T) {
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range readDashboard(t).queries(t) {
		expr := grafanaVar.ReplaceAllStringFunc(q.expr, func(v string) string {
			name := strings.Trim(v, "${}")
			name, _, _ = strings.Cut(name, ":")
			if d, ok := grafanaDefaults[name]; ok {
				return d
			}
			return ".*" // a multi-value variable inside =~"..."
		})
		fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %q\n", i, expr)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.rules.yml"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "dashboard.rules.yml")
}

// announcedMetrics are metrics DESIGN.md names that rotatord does not
// export yet; alert rules may use them ahead of time (an alert on a series
// that does not exist stays silent). The dashboard may not: a panel over a
// missing metric is a broken panel.
var announcedMetrics = map[string]string{}

// Every metric an alert reads is exported or announced in DESIGN.md: a
// typo in an alert's metric name would make it silent forever.
func TestRules_namesOnlyKnownMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	for _, r := range alertRules(t) {
		names := metricNames(r.Expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", r.Alert, r.Expr)
		}
		for _, n := range checkNames(exported, names) {
			if _, ok := announcedMetrics[n]; !ok {
				t.Errorf("%s reads %s, which rotatord neither exports nor DESIGN.md announces", r.Alert, n)
			}
		}
	}
	for n, why := range announcedMetrics {
		if exported[n] {
			t.Errorf("%s (%s) is exported now: drop it from announcedMetrics and give it a dashboard panel", n, why)
		}
	}
}
