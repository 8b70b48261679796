package report

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium returns Debian's chromium, skipping the test when it is missing
// (failing it under CI=true, where .ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found (apt-get install chromium)")
	}
	t.Skip("chromium not found (apt-get install chromium)")
	return ""
}

// runChromium runs headless chromium on a file with args, in a profile of
// its own that resolves no host name, and returns its stdout. The flags
// turn off what chromium does by itself in the background, so that its
// net log shows what the page did.
func runChromium(t *testing.T, bin, page string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(),
		"--host-resolver-rules=MAP * ~NOTFOUND",
	}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), "file://"+page)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// pageRequests returns the URLs of the requests a page made, from a
// chromium net log: requests made for a document carry its origin (the
// page's, "null" for file://) as initiator; chromium's own background
// requests carry "not an origin". Loading the file:// page itself is not a
// network request and does not appear.
func pageRequests(t *testing.T, netLog string) []string {
	t.Helper()
	b, err := os.ReadFile(netLog)
	if err != nil {
		t.Fatalf("read net log: %v", err)
	}
	var log struct {
		Constants struct {
			LogEventTypes map[string]int `json:"logEventTypes"`
		} `json:"constants"`
		Events []struct {
			Type   int `json:"type"`
			Params struct {
				URL       string `json:"url"`
				Initiator string `json:"initiator"`
			} `json:"params"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b, &log); err != nil {
		t.Fatalf("parse net log: %v", err)
	}
	start, ok := log.Constants.LogEventTypes["URL_REQUEST_START_JOB"]
	if !ok {
		t.Fatal("net log has no URL_REQUEST_START_JOB event type: format changed?")
	}
	var urls []string
	for _, e := range log.Events {
		// The event's end carries no URL, only the outcome.
		if e.Type == start && e.Params.URL != "" && e.Params.Initiator != "not an origin" {
			urls = append(urls, e.Params.URL)
		}
	}
	return urls
}

// TestReport_WriteHTMLInBrowser renders the HTML report of the fixture in
// headless chromium: the rendered DOM holds the chart (one bar per key)
// and the tables, the screenshot shows the bars in their status colours,
// and the page made no network request. With -update it also refreshes
// docs/report-example.png.
func TestReport_WriteHTMLInBrowser(t *testing.T) {
	bin := chromium(t)
	r := newFixture(t).generate(t)
	r.AuditHead = auditHead
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, []byte(writeHTML(t, r)), 0o600); err != nil {
		t.Fatal(err)
	}

	netLog := filepath.Join(dir, "net.json")
	dom := string(runChromium(t, bin, page, "--dump-dom", "--log-net-log="+netLog))
	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(dom, -1)) }
	if n := count(`<svg class="chart"`); n != 1 {
		t.Errorf("rendered DOM has %d chart SVGs, want 1", n)
	}
	if n := count(`<g class="key `); n != len(r.Keys) {
		t.Errorf("rendered chart has %d bars, want one per key (%d)", n, len(r.Keys))
	}
	if n := count(`<rect class="bar"`); n != len(r.Keys) {
		t.Errorf("rendered chart has %d rects, want %d", n, len(r.Keys))
	}
	if n := count(`<table class="keys">`); n != 1 {
		t.Errorf("rendered DOM has %d keys tables", n)
	}
	if n := count(`<tr class="(ok|due|overdue|failing|retiring|orphaned|unmanaged)">`); n != len(r.Keys) {
		t.Errorf("rendered keys table has %d rows, want %d", n, len(r.Keys))
	}
	for _, k := range r.Keys {
		if !strings.Contains(dom, ">"+k.KeyName+"<") || !strings.Contains(dom, k.Fingerprint) {
			t.Errorf("key %s is not in the rendered DOM", k.KeyName)
		}
	}
	for _, want := range []string{`<table class="policies">`, `<section id="warnings">`, `<code>` + auditHead + `</code>`} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM has no %s", want)
		}
	}
	if reqs := pageRequests(t, netLog); len(reqs) != 0 {
		t.Errorf("the page made network requests: %q", reqs)
	}

	shot := filepath.Join(dir, "report.png")
	runChromium(t, bin, page, "--screenshot="+shot, "--window-size=1200,1600")
	img := readPNG(t, shot)
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 1600 {
		t.Errorf("screenshot is %v, want 1200x1600", b.Size())
	}
	// Each bar is drawn in its status's colour at its length: the longest
	// horizontal run of a colour is the longest bar of that status (the
	// summary stripes and table badges of the same colour are narrower
	// than the bars checked). The SVG is 1000 units across the page's
	// 1136-pixel column.
	colours := map[string]color.RGBA{
		StatusOK: {0x2e, 0x7d, 0x32, 0xff}, StatusDue: {0xe0, 0xa0, 0x00, 0xff}, StatusOverdue: {0xc6, 0x28, 0x28, 0xff},
		StatusFailing: {0x7b, 0x1f, 0xa2, 0xff}, StatusRetiring: {0x5c, 0x7c, 0x99, 0xff},
		StatusOrphaned: {0xe6, 0x51, 0x00, 0xff}, StatusUnmanaged: {0x8a, 0x8f, 0x95, 0xff},
	}
	longest := map[string]float64{}
	for _, ch := range buildChart(r.Keys).Chunks {
		for _, b := range ch.Bars {
			longest[b.Status] = max(longest[b.Status], b.W*1136/1000)
		}
	}
	for status, c := range colours {
		run := longestRun(img, c)
		switch want := longest[status]; {
		case want >= 100:
			if run < int(want)-4 || run > int(want)+4 {
				t.Errorf("the longest %s bar is %d pixels wide in the screenshot, want %.0f", status, run, want)
			}
		case run < 8:
			t.Errorf("no %s colour in the screenshot (longest run %d pixels)", status, run)
		}
	}
	if *update {
		b, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "report-example.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReport_WriteHTMLInBrowserHostile renders a report whose key names
// and warnings are markup: the browser's DOM must hold them as text only.
func TestReport_WriteHTMLInBrowserHostile(t *testing.T) {
	bin := chromium(t)
	r := &Report{GeneratedAt: now, Summary: map[string]int{StatusUnmanaged: 2}, Keys: []Row{
		{Provider: "p", KeyID: "1", KeyName: `<script>document.title="pwned"</script>`, Status: StatusUnmanaged, CreatedAt: now.Add(-day), AgeSeconds: 86400},
		{Provider: "p", KeyID: "2", KeyName: `"><img src=http://evil.example/x.png>`, Status: StatusUnmanaged, CreatedAt: now.Add(-2 * day), AgeSeconds: 2 * 86400},
	}, Warnings: []string{`</li></ul><iframe src="https://evil.example/"></iframe>`}}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, []byte(writeHTML(t, r)), 0o600); err != nil {
		t.Fatal(err)
	}
	netLog := filepath.Join(dir, "net.json")
	dom := string(runChromium(t, bin, page, "--dump-dom", "--log-net-log="+netLog))
	for _, bad := range []string{"<script", "<img", "<iframe", "pwned</title>"} {
		if strings.Contains(dom, bad) {
			t.Errorf("provider data became markup in the rendered DOM: %q", bad)
		}
	}
	if !strings.Contains(dom, "&lt;script&gt;") {
		t.Error("the hostile key name is not shown as text")
	}
	if reqs := pageRequests(t, netLog); len(reqs) != 0 {
		t.Errorf("the page made network requests: %q", reqs)
	}
}

// TestPageRequests_SeesRequests: the net log check above can fail — a page
// that loads a stylesheet, an image and an SVG image is caught.
func TestPageRequests_SeesRequests(t *testing.T) {
	bin := chromium(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "leaky.html")
	leaky := `<!DOCTYPE html><html><head><link rel="stylesheet" href="https://fonts.example.invalid/css"></head>` +
		`<body><img src="http://cdn.example.invalid/a.png"><img src="data:,"><svg><image href="http://127.0.0.1:9/x.png"/></svg></body></html>`
	if err := os.WriteFile(page, []byte(leaky), 0o600); err != nil {
		t.Fatal(err)
	}
	netLog := filepath.Join(dir, "net.json")
	runChromium(t, bin, page, "--dump-dom", "--log-net-log="+netLog)
	got := strings.Join(pageRequests(t, netLog), " ")
	for _, want := range []string{"https://fonts.example.invalid/css", "http://cdn.example.invalid/a.png", "http://127.0.0.1:9/x.png"} {
		if !strings.Contains(got, want) {
			t.Errorf("requests %q do not include %s", got, want)
		}
	}
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return img
}

// longestRun returns the longest horizontal run of pixels within a small
// distance of c, bridging gaps of up to 4 pixels: the max_age mark
// crossing a bar. (Anti-aliased grey text has pixels of the unmanaged grey
// too, but never in runs.)
func longestRun(img image.Image, c color.RGBA) int {
	best := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		start, last := -1, -100
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if !near(r>>8, c.R) || !near(g>>8, c.G) || !near(bl>>8, c.B) {
				continue
			}
			if x-last > 5 {
				start = x
			}
			last = x
			best = max(best, x-start+1)
		}
	}
	return best
}

func near(v uint32, want uint8) bool {
	d := int(v) - int(want)
	return d >= -3 && d <= 3
}
