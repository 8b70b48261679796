package report

import (
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord/internal/inventory"
	"github.com/rotatord/rotatord/internal/state"
)

// The instances section (DESIGN.md §9.1): which running machines each key
// reached. It is read from the listings the daemon's runs store in state,
// never listed by the report itself, so a report of thousands of machines
// builds in milliseconds and a scrape can export rotatord_instances.

// InstanceRow is one running machine. The JSON and CSV names are the
// fields of DESIGN.md §9.1; Stale marks a machine of an account whose
// last listing failed (it may be gone).
type InstanceRow struct {
	Provider   string    `json:"provider"`
	ProjectID  int64     `json:"project_id"`
	Region     string    `json:"region"`
	InstanceID string    `json:"instance_id"`
	Name       string    `json:"name"`
	Status     string    `json:"status"`
	KeyName    string    `json:"key_name"`
	KeyID      string    `json:"key_id"`
	KeyStatus  string    `json:"key_status"`
	Policy     string    `json:"policy"`
	Address    string    `json:"address"`
	CreatedAt  time.Time `json:"created_at"`
	Stale      bool      `json:"stale"`
}

// MarshalJSON writes a zero CreatedAt as null, as Row does.
func (r InstanceRow) MarshalJSON() ([]byte, error) {
	type plain InstanceRow
	v := struct {
		plain
		CreatedAt *time.Time `json:"created_at"`
	}{plain: plain(r)}
	if !r.CreatedAt.IsZero() {
		t := r.CreatedAt.UTC()
		v.CreatedAt = &t
	}
	return json.Marshal(v)
}

// InventoryInfo is how fresh one account's listing is.
type InventoryInfo struct {
	Provider  string `json:"provider"`
	ProjectID int64  `json:"project_id"`
	Instances int    `json:"instances"`
	// ListedAt is when the last complete listing started; null when none
	// ever completed.
	ListedAt *time.Time `json:"listed_at"`
	// Stale is set when the last listing failed or was partial, or none
	// was ever made; StaleSince says since when (null when never listed).
	Stale      bool       `json:"stale"`
	StaleSince *time.Time `json:"stale_since"`
	Error      string     `json:"error,omitempty"`
}

// exposedRef names a policy's key.
type exposedRef struct{ policy, keyID string }

// readInventory attributes the stored listings (inside the report's
// state snapshot) before the key records are read, so that a key found
// exposed gets that status.
func (g *generator) readInventory(tx state.Tx) error {
	res, err := inventory.Attribute(tx, g.cfg, g.now)
	if err != nil {
		return fmt.Errorf("read inventory: %w", err)
	}
	g.inv = res
	g.exposed = make(map[exposedRef]bool, len(res.Exposed))
	for _, x := range res.Exposed {
		g.exposed[exposedRef{x.Policy, x.KeyID}] = true
	}
	return nil
}

// finishInstances fills the instances section.
func (g *generator) finishInstances() {
	r := g.report
	r.Instances = []InstanceRow{}
	r.InstanceSummary = make(map[string]int, len(inventory.KeyStatuses()))
	r.Inventory = []InventoryInfo{}
	for _, s := range inventory.KeyStatuses() {
		r.InstanceSummary[s] = 0
	}
	if g.inv == nil {
		return
	}
	stale := map[inventory.Account]bool{}
	for _, a := range g.inv.Accounts {
		if prov, ok := g.cfg.ProviderByName(a.Provider); ok && prov.NoInventory {
			continue
		}
		info := InventoryInfo{Provider: a.Provider, ProjectID: a.ProjectID, Instances: a.Instances, Stale: a.Stale(), Error: a.Error}
		info.ListedAt, info.StaleSince = timePtr(a.ListedAt), timePtr(a.StaleSince)
		r.Inventory = append(r.Inventory, info)
		stale[a.Account] = a.Stale()
	}
	r.Instances = make([]InstanceRow, 0, len(g.inv.Instances))
	for _, in := range g.inv.Instances {
		r.Instances = append(r.Instances, InstanceRow{
			Provider: in.Provider, ProjectID: in.ProjectID, Region: in.Region, InstanceID: in.ID, Name: in.Name,
			Status: in.Status, KeyName: in.KeyName, KeyID: in.KeyID, KeyStatus: in.KeyStatus, Policy: in.Policy,
			Address: in.Address, CreatedAt: in.CreatedAt, Stale: stale[inventory.Account{Provider: in.Provider, ProjectID: in.ProjectID}],
		})
		r.InstanceSummary[in.KeyStatus]++
	}
	slices.SortFunc(r.Instances, compareInstances)
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// compareInstances orders machines by policy (unattributed last), then
// where they run and their name.
func compareInstances(a, b InstanceRow) int {
	return cmp.Or(
		policiesFirst(a.Policy, b.Policy),
		cmp.Compare(a.Policy, b.Policy),
		cmp.Compare(a.Provider, b.Provider),
		cmp.Compare(a.ProjectID, b.ProjectID),
		cmp.Compare(a.Region, b.Region),
		cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.InstanceID, b.InstanceID),
	)
}

// Exposed reports whether some key is exposed: a running machine was
// provisioned with a key rotatord retired or deleted, or one past max_age
// (the -fail-on exposed gate).
func (r *Report) Exposed() bool {
	for _, k := range r.Keys {
		if k.Status == StatusExposed {
			return true
		}
	}
	for _, in := range r.Instances {
		if in.KeyStatus == inventory.KeyExposed {
			return true
		}
	}
	return false
}

// exposedOverdue reports whether k is a policy's active key that is
// exposed, which it can only be by being past max_age: the overdue gate
// counts it as overdue.
func exposedOverdue(k Row) bool {
	return k.Status == StatusExposed && !k.NextRotation.IsZero() && k.MaxAgeSeconds > 0 && k.AgeSeconds >= k.MaxAgeSeconds
}

// inventoryShown reports whether the human formats show the instances
// section: some account was listed at least once.
func (r *Report) inventoryShown() bool {
	for _, a := range r.Inventory {
		if a.ListedAt != nil || a.StaleSince != nil || a.Instances > 0 {
			return true
		}
	}
	return len(r.Instances) > 0
}

// instanceSummaryLine is "12 instances: 9 current, 3 exposed".
func (r *Report) instanceSummaryLine() string {
	var parts []string
	for _, s := range inventory.KeyStatuses() {
		if n := r.InstanceSummary[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	line := fmt.Sprintf("%d instance", len(r.Instances))
	if len(r.Instances) != 1 {
		line += "s"
	}
	if len(parts) > 0 {
		line += " (by key status): " + strings.Join(parts, ", ")
	}
	return line
}

// staleLines names each stale account with since when.
func (r *Report) staleLines() []string {
	var out []string
	for _, a := range r.Inventory {
		if !a.Stale || (a.StaleSince == nil && a.ListedAt == nil) {
			continue
		}
		since := "never listed"
		if a.StaleSince != nil {
			since = "since " + stamp(*a.StaleSince)
		}
		out = append(out, fmt.Sprintf("inventory STALE %s: %s%s (last complete listing %s)", since, a.Provider, projectSuffix(a.ProjectID), orNeverPtr(a.ListedAt)))
	}
	return out
}

func orNeverPtr(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return stamp(*t)
}

// instanceColumns are the columns of the human formats.
var instanceColumns = []struct {
	table, markdown string
	cell            func(InstanceRow) string
}{
	{"POLICY", "Policy", func(i InstanceRow) string { return i.Policy }},
	{"PROVIDER", "Provider", func(i InstanceRow) string { return i.Provider }},
	{"PROJECT", "Project", func(i InstanceRow) string { return project(i.ProjectID) }},
	{"REGION", "Region", func(i InstanceRow) string { return i.Region }},
	{"NAME", "Name", func(i InstanceRow) string { return i.Name }},
	{"STATUS", "Status", func(i InstanceRow) string { return i.Status }},
	{"KEY_NAME", "Key name", func(i InstanceRow) string { return i.KeyName }},
	{"KEY_STATUS", "Key status", func(i InstanceRow) string {
		if i.Stale {
			return i.KeyStatus + " (stale)"
		}
		return i.KeyStatus
	}},
	{"ADDRESS", "Address", func(i InstanceRow) string { return i.Address }},
	{"CREATED", "Created", func(i InstanceRow) string { return stamp(i.CreatedAt) }},
	{"INSTANCE_ID", "Instance ID", func(i InstanceRow) string { return i.InstanceID }},
	{"KEY_ID", "Key ID", func(i InstanceRow) string { return i.KeyID }},
}

// writeInstancesTable appends the instances section to a table report.
func (r *Report) writeInstancesTable(w io.Writer) error {
	if !r.inventoryShown() {
		return nil
	}
	if _, err := io.WriteString(w, "\nINSTANCES\n"); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	cells := make([]string, len(instanceColumns))
	for i, c := range instanceColumns {
		cells[i] = c.table
	}
	var b strings.Builder
	b.WriteString(strings.Join(cells, "\t") + "\n")
	for _, in := range r.Instances {
		for i, c := range instanceColumns {
			cells[i] = orDash(clean(c.cell(in)))
		}
		b.WriteString(strings.Join(cells, "\t") + "\n")
	}
	if _, err := io.WriteString(tw, b.String()); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.Reset()
	fmt.Fprintf(&b, "\n%s\n", r.instanceSummaryLine())
	for _, l := range r.staleLines() {
		fmt.Fprintf(&b, "%s\n", l)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeInstancesMarkdown appends the instances section to a Markdown
// report.
func (r *Report) writeInstancesMarkdown(b *strings.Builder) {
	if !r.inventoryShown() {
		return
	}
	b.WriteString("\n## Instances\n\n")
	for _, l := range r.staleLines() {
		fmt.Fprintf(b, "**%s**\n\n", mdEscape(l))
	}
	if len(r.Instances) == 0 {
		b.WriteString("No running machine was listed.\n")
		return
	}
	head := make([]string, len(instanceColumns))
	rule := make([]string, len(instanceColumns))
	for i, c := range instanceColumns {
		head[i], rule[i] = c.markdown, "---"
	}
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|" + strings.Repeat(" --- |", len(head)) + "\n")
	cells := make([]string, len(instanceColumns))
	for _, in := range r.Instances {
		for i, c := range instanceColumns {
			v := clean(c.cell(in))
			switch {
			case v == "":
			case c.table == "INSTANCE_ID" || c.table == "KEY_ID":
				v = "`" + mdCode(v) + "`"
			default:
				v = mdEscape(v)
			}
			if c.table == "KEY_STATUS" && in.KeyStatus == inventory.KeyExposed {
				v = "**" + v + "**"
			}
			cells[i] = v
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	fmt.Fprintf(b, "\n**%s**\n", r.instanceSummaryLine())
}

// instanceCSVHeader is the header of the instances section of a CSV
// report.
var instanceCSVHeader = []string{"provider", "project_id", "region", "instance_id", "name", "status",
	"key_name", "key_id", "key_status", "policy", "address", "created_at", "stale"}

// writeInstancesCSV appends the instances, after an empty line, as a
// second table with its own header. It writes nothing when no account was
// ever listed, so a report without inventory stays one table.
func (r *Report) writeInstancesCSV(w io.Writer) error {
	if !r.inventoryShown() {
		return nil
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(instanceCSVHeader); err != nil {
		return err
	}
	for _, in := range r.Instances {
		if err := cw.Write([]string{
			in.Provider, strconv.FormatInt(in.ProjectID, 10), in.Region, in.InstanceID, in.Name, in.Status,
			in.KeyName, in.KeyID, in.KeyStatus, in.Policy, in.Address, stamp(in.CreatedAt), strconv.FormatBool(in.Stale),
		}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// digestExposure is the digest's exposure paragraph: how many keys and
// machines, the exposed keys by policy, and stale inventories.
func (r *Report) digestExposure(b *strings.Builder) {
	if !r.inventoryShown() {
		return
	}
	type key struct{ policy, name string }
	machines := map[key]int{}
	var order []key
	total := 0
	for _, in := range r.Instances {
		if in.KeyStatus != inventory.KeyExposed {
			continue
		}
		total++
		k := key{in.Policy, cmp.Or(in.KeyName, in.KeyID)}
		if machines[k] == 0 {
			order = append(order, k)
		}
		machines[k]++
	}
	fmt.Fprintf(b, "Exposure: %d exposed key(s) on %d of %d running machine(s).\n", len(order), total, len(r.Instances))
	for i, k := range order {
		if i == digestLimit {
			fmt.Fprintf(b, "• …and %d more\n", len(order)-digestLimit)
			break
		}
		fmt.Fprintf(b, "• %s: %s still opens %d machine(s)\n", clean(k.policy), clean(k.name), machines[k])
	}
	for _, l := range r.staleLines() {
		fmt.Fprintf(b, "%s\n", l)
	}
}

// collectInstances exports rotatord_instances{policy,key_status}: every
// configured policy with every key status, zeros included, so that an
// alert on exposed machines sees a series from the start, plus the
// machines no policy's key reached under policy "".
//
// Before any account was ever listed it exports nothing: zeros would claim
// a listing that never happened.
func collectInstances(ch chan<- prometheus.Metric, r *Report) {
	if !r.inventoryShown() {
		return
	}
	type series struct{ policy, status string }
	n := map[series]int{}
	for _, in := range r.Instances {
		n[series{in.Policy, in.KeyStatus}]++
	}
	names := make([]string, 0, len(r.Policies)+1)
	for _, p := range r.Policies {
		names = append(names, p.Name)
	}
	for s := range n {
		if !slices.Contains(names, s.policy) {
			names = append(names, s.policy) // "" and policies no longer configured
		}
	}
	for _, name := range names {
		for _, st := range inventory.KeyStatuses() {
			ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(n[series{name, st}]), name, st)
		}
	}
	for _, a := range r.Inventory {
		if a.ListedAt == nil && a.StaleSince == nil {
			continue // never listed: nothing to be stale
		}
		v := 0.0
		if a.Stale {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descInventoryStale, prometheus.GaugeValue, v, a.Provider, strconv.FormatInt(a.ProjectID, 10))
	}
}

// descInventoryStale is 1 while an account's last instance listing failed
// (in whole or in part): exposure found since then is not seen.
var descInventoryStale = prometheus.NewDesc("rotatord_inventory_stale",
	"1 when the provider account's last instance listing failed or was partial (the report shows the last good one, marked stale), 0 when it is fresh; absent before the first listing.",
	[]string{"provider", "project_id"}, nil)

// htmlInstances is the instances section of the HTML page.
type htmlInstances struct {
	Stale   []string
	Summary []htmlCount
	Rows    []htmlInstance
}

type htmlInstance struct {
	Policy, Provider, Project, Region string
	Name, InstanceID, Status          string
	KeyName, KeyID, KeyStatus         string
	Address                           string
	Stale                             bool
	Created                           htmlTime
}

// htmlInstances prepares the section, or nil when no account was ever
// listed.
func (r *Report) htmlInstances() *htmlInstances {
	if !r.inventoryShown() {
		return nil
	}
	h := &htmlInstances{Rows: make([]htmlInstance, 0, len(r.Instances))}
	for _, l := range r.staleLines() {
		h.Stale = append(h.Stale, clean(l))
	}
	for _, s := range inventory.KeyStatuses() {
		h.Summary = append(h.Summary, htmlCount{Status: s, Count: r.InstanceSummary[s]})
	}
	for _, in := range r.Instances {
		h.Rows = append(h.Rows, htmlInstance{
			Policy: clean(in.Policy), Provider: clean(in.Provider), Project: project(in.ProjectID), Region: clean(in.Region),
			Name: clean(in.Name), InstanceID: clean(in.InstanceID), Status: clean(in.Status),
			KeyName: clean(in.KeyName), KeyID: clean(in.KeyID), KeyStatus: in.KeyStatus, Address: clean(in.Address),
			Stale: in.Stale, Created: newHTMLTime(in.CreatedAt),
		})
	}
	return h
}
