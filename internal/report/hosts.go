package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Host statuses, the values of HostRow.Status (DESIGN.md §9.2).
const (
	// HostOK: the host trusts the policy's current key, proven by a login
	// with it alone, and no key whose grace is over.
	HostOK = "ok"
	// HostStale: the host answered but is behind: it lacks the current key
	// or still holds a retired one (or an edit was interrupted).
	HostStale = "stale"
	// HostUnreachable: rotatord could not open an SSH session to it.
	HostUnreachable = "unreachable"
	// HostUnverified: rotatord cannot tell what the host trusts: never
	// contacted, a changed or unknown host key, none of the keys rotatord
	// holds opens it, or a login with the current key failed. Detail says
	// which.
	HostUnverified = "unverified"
)

// hostStatuses lists every host status in summary order.
var hostStatuses = []string{HostOK, HostStale, HostUnreachable, HostUnverified}

// HostRow is one host of one policy.
type HostRow struct {
	Host   string `json:"host"` // user@addr:port
	Policy string `json:"policy"`
	Status string `json:"status"`
	// Detail says why a host is not ok, in rotatord's words:
	// never_contacted, host_key_changed, host_key_unknown, denied,
	// unverified, missing_current_key, retired_key_present.
	Detail string `json:"detail,omitempty"`
	// Trusts are the policy's keys the host's authorized_keys held when
	// last read, with each key's status.
	Trusts      []HostTrust `json:"trusts"`
	LastContact time.Time   `json:"last_contact"`
	// HostKey is the SHA256 fingerprint of the host key last verified.
	HostKey string `json:"host_key,omitempty"`
}

// MarshalJSON writes a zero LastContact (never contacted) as null, as the
// key rows write their zero times.
func (h HostRow) MarshalJSON() ([]byte, error) {
	type plain HostRow
	var last *time.Time
	if !h.LastContact.IsZero() {
		t := h.LastContact.UTC()
		last = &t
	}
	return json.Marshal(struct {
		plain
		LastContact *time.Time `json:"last_contact"`
	}{plain(h), last})
}

// HostTrust is one managed key present on a host.
type HostTrust struct {
	Fingerprint string `json:"fingerprint"`
	// KeyStatus is the key's status in rotatord's records: active,
	// retiring, deleted, orphaned...; unknown when no record names it.
	KeyStatus string `json:"key_status"`
}

// addHosts builds the hosts section: every host of every configured policy
// with a hosts block (its static targets, and the hosts recorded for it,
// discovered ones included).
func (g *generator) addHosts(tx state.Tx, cfg *policy.Config) error {
	var withHosts []*policy.Policy
	for i := range cfg.Policies {
		if cfg.Policies[i].Hosts != nil {
			withHosts = append(withHosts, &cfg.Policies[i])
		}
	}
	if len(withHosts) == 0 {
		return nil
	}
	g.report.HostsSummary = make(map[string]int, len(hostStatuses))
	for _, s := range hostStatuses {
		g.report.HostsSummary[s] = 0
	}
	for _, p := range withHosts {
		rows, err := PolicyHosts(tx, p, g.now)
		if err != nil {
			return err
		}
		for _, row := range rows {
			g.report.Hosts = append(g.report.Hosts, row)
			g.report.HostsSummary[row.Status]++
		}
	}
	return nil
}

// PolicyHosts classifies every host of p (its static targets, then the
// other hosts recorded for it, discovered ones) as of now. The report,
// the metrics and `status` all count with it.
func PolicyHosts(tx state.Tx, p *policy.Policy, now time.Time) ([]HostRow, error) {
	if p.Hosts == nil {
		return nil, nil
	}
	recs, err := tx.Keys(p.Name)
	if err != nil {
		return nil, err
	}
	hosts, err := tx.Hosts(p.Name)
	if err != nil {
		return nil, err
	}
	byHost := map[string]state.HostRecord{}
	for _, h := range hosts {
		byHost[h.Host] = h
	}
	var names []string
	for _, t := range p.Hosts.Targets {
		names = append(names, t.String())
	}
	for _, h := range hosts {
		if !slices.Contains(names, h.Host) && h.Source != rotate.HostSourceStatic {
			names = append(names, h.Host)
		}
	}
	rows := make([]HostRow, 0, len(names))
	for _, name := range names {
		rows = append(rows, HostRowFor(name, p.Name, byHost[name], recs, now))
	}
	return rows, nil
}

// CountHosts counts rows by status, every status present.
func CountHosts(rows []HostRow) map[string]int {
	out := make(map[string]int, len(hostStatuses))
	for _, s := range hostStatuses {
		out[s] = 0
	}
	for _, r := range rows {
		out[r.Status]++
	}
	return out
}

// HostRowFor classifies one host from its record and the policy's key
// records, as the report, the metrics and `status` all do.
func HostRowFor(host, policyName string, rec state.HostRecord, keys []state.KeyRecord, now time.Time) HostRow {
	row := HostRow{Host: host, Policy: policyName, LastContact: rec.LastContact, HostKey: rec.HostKeyFingerprint, Trusts: []HostTrust{}}
	byFP := map[string]state.KeyRecord{}
	for _, k := range keys {
		if k.Fingerprint != "" {
			byFP[k.Fingerprint] = k
		}
	}
	cur, _ := state.Current(keys)
	for _, fp := range rec.Trusts {
		st := "unknown"
		if k, ok := byFP[fp]; ok {
			st = string(k.Status)
		}
		row.Trusts = append(row.Trusts, HostTrust{Fingerprint: fp, KeyStatus: st})
	}
	switch rec.Status {
	case state.HostNeverContacted:
		row.Status, row.Detail = HostUnverified, "never_contacted"
	case state.HostUnreachable:
		row.Status = HostUnreachable
	case state.HostStale:
		row.Status = HostStale
	case state.HostOK:
		row.Status = HostOK
		if cur.Fingerprint != "" && !slices.Contains(rec.Trusts, cur.Fingerprint) {
			row.Status, row.Detail = HostStale, "missing_current_key"
			break
		}
		for _, fp := range rec.Trusts {
			k, ok := byFP[fp]
			if ok && fp != cur.Fingerprint && (k.Status == state.KeyDeleted ||
				(k.Status == state.KeyRetiring || k.Status == state.KeyOrphaned) && !k.DeleteAfter.IsZero() && !k.DeleteAfter.After(now)) {
				row.Status, row.Detail = HostStale, "retired_key_present"
				break
			}
		}
	default:
		row.Status, row.Detail = HostUnverified, string(rec.Status)
	}
	return row
}

// HostsStale reports whether some host is not ok: the -fail-on stale gate.
// An unreachable or unverified host may still trust a retired key, so it
// fails the gate as a stale one does.
func (r *Report) HostsStale() bool {
	for _, h := range r.Hosts {
		if h.Status != HostOK {
			return true
		}
	}
	return false
}

// LastContactText is LastContact in RFC 3339 UTC, for the HTML page.
func (h HostRow) LastContactText() string { return stamp(h.LastContact) }

// HostsLine is the hosts' summary, for the HTML page.
func (r *Report) HostsLine() string { return r.hostsLine() }

// hostsLine is the hosts' summary: "hosts: 18 ok, 1 stale, 1 unreachable, 0 unverified".
func (r *Report) hostsLine() string {
	parts := make([]string, 0, len(hostStatuses))
	for _, s := range hostStatuses {
		parts = append(parts, fmt.Sprintf("%d %s", r.HostsSummary[s], s))
	}
	return "hosts: " + strings.Join(parts, ", ")
}

func trustsText(ts []HostTrust) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.Fingerprint + " (" + t.KeyStatus + ")"
	}
	return strings.Join(parts, " ")
}

func statusText(h HostRow) string {
	if h.Detail != "" {
		return h.Status + " (" + h.Detail + ")"
	}
	return h.Status
}

// writeHostsTable is the table format's hosts section.
func (r *Report) writeHostsTable(w io.Writer) error {
	if len(r.Hosts) == 0 {
		return nil
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tPOLICY\tSTATUS\tLAST_CONTACT\tTRUSTS")
	for _, h := range r.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clean(h.Host), clean(h.Policy), clean(statusText(h)),
			orDash(stamp(h.LastContact)), orDash(clean(trustsText(h.Trusts))))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, r.hostsLine()+"\n")
	return err
}

// writeHostsCSV appends the hosts as a second table: an empty line, its
// own header row, one record per host. Read it with a csv reader that
// allows a varying number of fields, or split at the empty line.
func (r *Report) writeHostsCSV(w io.Writer) error {
	if len(r.Hosts) == 0 {
		return nil
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"host", "policy", "status", "detail", "trusts", "last_contact", "host_key"}); err != nil {
		return err
	}
	for _, h := range r.Hosts {
		if err := cw.Write([]string{h.Host, h.Policy, h.Status, h.Detail, trustsText(h.Trusts), stamp(h.LastContact), h.HostKey}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// hostsMarkdown is the markdown format's hosts section.
func (r *Report) hostsMarkdown() string {
	if len(r.Hosts) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n## Hosts\n\n| Host | Policy | Status | Last contact | Trusts |\n| --- | --- | --- | --- | --- |\n")
	for _, h := range r.Hosts {
		var trusts []string
		for _, t := range h.Trusts {
			trusts = append(trusts, "`"+mdCode(t.Fingerprint)+"` "+mdEscape(t.KeyStatus))
		}
		status := mdEscape(statusText(h))
		if h.Status != HostOK {
			status = "**" + status + "**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", mdEscape(clean(h.Host)), mdEscape(clean(h.Policy)), status,
			orDash(stamp(h.LastContact)), orDash(strings.Join(trusts, "<br>")))
	}
	fmt.Fprintf(&b, "\n**%s**\n", r.hostsLine())
	return b.String()
}

// hostsDigest is the digest's line about hosts, "" without hosts.
func (r *Report) hostsDigest() string {
	if len(r.Hosts) == 0 {
		return ""
	}
	var bad []string
	for _, h := range r.Hosts {
		if h.Status != HostOK {
			bad = append(bad, clean(h.Host)+" ("+h.Policy+"): "+statusText(h))
		}
	}
	s := r.hostsLine() + ".\n"
	for i, b := range bad {
		if i == digestLimit {
			s += fmt.Sprintf("• …and %d more\n", len(bad)-digestLimit)
			break
		}
		s += "• " + b + "\n"
	}
	return s
}

var descHosts = prometheus.NewDesc("rotatord_hosts",
	"Hosts of each policy by status (ok, stale, unreachable, unverified).",
	[]string{"policy", "status"}, nil)

// collectHosts exports rotatord_hosts{policy,status}, zeros included for
// every policy with hosts.
func collectHosts(r *Report, ch chan<- prometheus.Metric) {
	counts := map[string]map[string]int{}
	var order []string
	for _, h := range r.Hosts {
		if counts[h.Policy] == nil {
			counts[h.Policy] = map[string]int{}
			order = append(order, h.Policy)
		}
		counts[h.Policy][h.Status]++
	}
	for _, p := range order {
		for _, s := range hostStatuses {
			ch <- prometheus.MustNewConstMetric(descHosts, prometheus.GaugeValue, float64(counts[p][s]), p, s)
		}
	}
}
