package report

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// scrape registers c alone and renders what a scrape returns in the text
// exposition format, as Prometheus would see it.
func scrape(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b strings.Builder
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestCollector_Collect(t *testing.T) {
	t.Run("state only", func(t *testing.T) {
		f := newFixture(t)
		f.providers = nil // what the daemon does: a scrape never calls a provider
		got := scrape(t, NewCollector(func() (*Report, error) {
			return Generate(context.Background(), f.source())
		}))
		want := `# HELP rotatord_key_age_seconds Age of each managed SSH key (active or retiring) since its creation.
# TYPE rotatord_key_age_seconds gauge
rotatord_key_age_seconds{key_id="3f0b6a52-8f1c-4c9e-9a51-0d2c6f1e7b01",policy="inference",provider="gcore-prod"} 7.344e+06
rotatord_key_age_seconds{key_id="3f0b6a52-8f1c-4c9e-9a51-0d2c6f1e7b04",policy="batch",provider="gcore-prod"} 3.9204e+06
rotatord_key_age_seconds{key_id="65f1a0c0ffee0000000000a1",policy="gpu-team",provider="sesterce-prod"} 896400
rotatord_key_age_seconds{key_id="65f1a0c0ffee0000000000a2",policy="gpu-team",provider="sesterce-prod"} 3.4884e+06
rotatord_key_age_seconds{key_id="65f1a0c0ffee0000000000b1",policy="training",provider="sesterce-lab"} 1.7604e+06
# HELP rotatord_key_max_age_seconds The policy's max_age: its active key is overdue at this age.
# TYPE rotatord_key_max_age_seconds gauge
rotatord_key_max_age_seconds{policy="batch"} 2.592e+06
rotatord_key_max_age_seconds{policy="gpu-team"} 2.592e+06
rotatord_key_max_age_seconds{policy="inference"} 7.776e+06
rotatord_key_max_age_seconds{policy="training"} 7.776e+06
# HELP rotatord_keys Keys in the compliance report by status (ok, due, overdue, failing, retiring, orphaned, unmanaged, exposed).
# TYPE rotatord_keys gauge
rotatord_keys{status="due"} 1
rotatord_keys{status="exposed"} 0
rotatord_keys{status="failing"} 1
rotatord_keys{status="ok"} 1
rotatord_keys{status="orphaned"} 2
rotatord_keys{status="overdue"} 1
rotatord_keys{status="retiring"} 1
rotatord_keys{status="unmanaged"} 0
`
		if got != want {
			t.Errorf("scrape:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("generation fails", func(t *testing.T) {
		got := scrape(t, NewCollector(func() (*Report, error) { return nil, errors.New("state file closed") }))
		if got != "" {
			t.Errorf("scrape after a failed generation = %q, want nothing", got)
		}
	})

	t.Run("duplicate records give one series", func(t *testing.T) {
		r := &Report{Keys: []Row{
			{Policy: "p", Provider: "x", KeyID: "k", Status: StatusOK, AgeSeconds: 5},
			{Policy: "p", Provider: "x", KeyID: "k", Status: StatusRetiring, AgeSeconds: 5},
			{Provider: "x", KeyID: "u", Status: StatusUnmanaged, AgeSeconds: 9},
		}}
		got := scrape(t, NewCollector(func() (*Report, error) { return r, nil }))
		if n := strings.Count(got, "rotatord_key_age_seconds{"); n != 1 {
			t.Errorf("%d age series, want 1 (unmanaged keys have none):\n%s", n, got)
		}
	})
}
