package report

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/state"
)

// TestReport_WriteHTMLInstancesInBrowser renders the instances section in
// headless Chromium: one row per machine with its key status, the stale
// marker with its time, and a machine name chosen by whoever launched it
// (markup) shown as text, with no request made.
func TestReport_WriteHTMLInstancesInBrowser(t *testing.T) {
	bin := chromium(t)
	f := newInvFixture(t, 2, 5, 1)
	since := now.Add(-2 * time.Hour)
	err := f.store.Update(func(tx state.Tx) error {
		inv, _, err := tx.Inventory("gcore-prod", 7)
		if err != nil {
			return err
		}
		inv.Instances = append(inv.Instances, state.InventoryInstance{ID: "evil", Name: `<img src="http://evil.example/x.png">`,
			Status: "ACTIVE", KeyName: "train-20260101T000000", Address: "198.18.9.9"})
		inv.StaleSince, inv.Error = since, "gcore-prod: list instances (region 76): HTTP 503"
		return tx.PutInventory(inv)
	})
	if err != nil {
		t.Fatal(err)
	}
	r := f.generate(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, []byte(writeHTML(t, r)), 0o600); err != nil {
		t.Fatal(err)
	}
	netLog := filepath.Join(dir, "net.json")
	dom := string(runChromium(t, bin, page, "--dump-dom", "--log-net-log="+netLog))
	if n := strings.Count(dom, `<table class="instances">`); n != 1 {
		t.Fatalf("rendered DOM has %d instances tables, want 1", n)
	}
	section := dom[strings.Index(dom, `<section id="instances">`):]
	section = section[:strings.Index(section, "</section>")]
	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(section, -1)) }
	if n := count(`<tr class="exposed">`); n != 6 {
		t.Errorf("%d exposed machine rows, want 6", n)
	}
	if n := count(`<tr class="(current|exposed|unmanaged)">`); n != 9 {
		t.Errorf("%d machine rows, want 9", n)
	}
	if !strings.Contains(dom, "inventory STALE since "+stamp(since)) {
		t.Error("no stale marker with its time")
	}
	if strings.Contains(dom, "<img") || !strings.Contains(dom, "&lt;img") {
		t.Error("a machine's name became markup")
	}
	if reqs := pageRequests(t, netLog); len(reqs) != 0 {
		t.Errorf("the page made network requests: %q", reqs)
	}
}
