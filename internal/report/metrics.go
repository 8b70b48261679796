package report

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descKeyAge = prometheus.NewDesc("rotatord_key_age_seconds",
		"Age of each managed SSH key (active or retiring) since its creation.",
		[]string{"policy", "provider", "key_id"}, nil)
	descMaxAge = prometheus.NewDesc("rotatord_key_max_age_seconds",
		"The policy's max_age: its active key is overdue at this age.",
		[]string{"policy"}, nil)
	descKeys = prometheus.NewDesc("rotatord_keys",
		"Keys in the compliance report by status (ok, due, overdue, failing, retiring, orphaned, unmanaged, exposed).",
		[]string{"status"}, nil)
	descInstances = prometheus.NewDesc("rotatord_instances",
		"Running machines of the last inventory by the policy whose key they were provisioned with (\"\" for none) and that key's status (current, retiring, orphaned, exposed, unmanaged, none).",
		[]string{"policy", "key_status"}, nil)
)

// NewCollector returns a Prometheus collector that calls gen at every
// scrape and exports rotatord_key_age_seconds{policy,provider,key_id} for
// every managed key (active or retiring), rotatord_key_max_age_seconds
// {policy} for every configured policy and rotatord_keys{status} for every
// status, zeros included so that alerts on a status do not see a missing
// series. Reading state at scrape time keeps ages exact without a ticker.
//
// gen should generate from state only (Source.Providers nil): a scrape must
// not call provider APIs. When gen fails the collector exports none of these
// metrics for that scrape and logs nothing; the caller logs.
func NewCollector(gen func() (*Report, error)) prometheus.Collector {
	return &collector{gen: gen}
}

type collector struct {
	gen func() (*Report, error)
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descKeyAge
	ch <- descMaxAge
	ch <- descKeys
	ch <- descInstances
	ch <- descInventoryStale
	ch <- descHosts
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r, err := c.gen()
	if err != nil || r == nil {
		return
	}
	type series struct{ policy, provider, keyID string }
	seen := make(map[series]bool)
	for _, k := range r.Keys {
		if k.Policy == "" || !managed(k.Status) {
			continue
		}
		s := series{k.Policy, k.Provider, k.KeyID}
		if seen[s] {
			// Two records of one key would make the scrape fail as a whole
			// with a duplicate-series error; one sample says it all.
			continue
		}
		seen[s] = true
		ch <- prometheus.MustNewConstMetric(descKeyAge, prometheus.GaugeValue, float64(k.AgeSeconds), k.Policy, k.Provider, k.KeyID)
	}
	for _, p := range r.Policies {
		ch <- prometheus.MustNewConstMetric(descMaxAge, prometheus.GaugeValue, float64(p.MaxAgeSeconds), p.Name)
	}
	for _, s := range statuses {
		ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(r.Summary[s]), s)
	}
	collectInstances(ch, r)
	collectHosts(r, ch)
}

// managed reports whether a row of this status is a key a policy holds:
// its active key (whatever its age class) or one in its grace period.
// Orphans are debris awaiting deletion, not keys in use.
func managed(status string) bool {
	switch status {
	case StatusOK, StatusDue, StatusOverdue, StatusFailing, StatusRetiring:
		return true
	}
	return false
}
