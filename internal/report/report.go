// Package report builds rotatord's compliance report (DESIGN.md §8): one
// row per SSH key seen, managed or not, with its age against the policy's
// max_age and a status an auditor can act on. The model comes from state
// (what rotatord did) joined with the providers' listings (what actually
// exists); it is rendered as a table, JSON, CSV or Markdown, summarised for
// the weekly Slack digest, and exported as Prometheus gauges.
//
// Rows carry fingerprints, never key material, and no free-text error from
// state: an error message can quote a provider response, and a report is
// pasted into tickets and chat.
package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/inventory"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Key statuses, the values of Row.Status.
//
// An active key is classified by age, with the most urgent status winning:
// overdue > failing > due > ok. Overdue beats failing because an expired key
// is the compliance breach itself, while failing only says rotatord cannot
// fix it; both fail the -fail-on overdue gate either way.
const (
	// StatusOK: an active key younger than max_age - rotate_before, or a key
	// uploaded by a rotation still in flight.
	StatusOK = "ok"
	// StatusDue: an active key inside its rotate_before window.
	StatusDue = "due"
	// StatusOverdue: an active key at or past max_age.
	StatusOverdue = "overdue"
	// StatusFailing: the active key of a policy marked failing (max_failures
	// consecutive failed runs), not yet overdue.
	StatusFailing = "failing"
	// StatusRetiring: a superseded key inside its grace period.
	StatusRetiring = "retiring"
	// StatusOrphaned: a key named like a policy's keys that no completed
	// rotation owns, or any key of a policy that is no longer configured.
	StatusOrphaned = "orphaned"
	// StatusUnmanaged: a key on a provider account that matches no policy's
	// naming scheme; reported, never touched.
	StatusUnmanaged = "unmanaged"
	// StatusExposed: a key rotatord retired or deleted (grace period over),
	// or one past max_age, while a running machine was provisioned with
	// it (DESIGN.md §9.1): it still opens that machine. It wins over every
	// other status; a policy's current key that is exposed is also overdue
	// and trips -fail-on overdue as such.
	StatusExposed = "exposed"
)

// statuses lists every status in the order summaries print them: healthy
// first, then the ones that need a human.
var statuses = []string{StatusOK, StatusDue, StatusOverdue, StatusFailing, StatusRetiring, StatusOrphaned, StatusUnmanaged, StatusExposed}

// Row is one key. The JSON and CSV field names are the public interface of
// DESIGN.md §8. Zero times marshal as JSON null (and an empty CSV cell).
type Row struct {
	// Policy is empty for unmanaged keys.
	Policy      string    `json:"policy"`
	Provider    string    `json:"provider"`
	ProjectID   int64     `json:"project_id"`
	KeyID       string    `json:"key_id"`
	KeyName     string    `json:"key_name"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	AgeSeconds  int64     `json:"age_seconds"`
	// MaxAgeSeconds is the policy's max_age; 0 for keys no configured
	// policy owns.
	MaxAgeSeconds int64  `json:"max_age_seconds"`
	Status        string `json:"status"`
	// Default is the provider's default-key flag (Sesterce); false when the
	// provider has no such notion or its listing was unavailable.
	Default bool `json:"default"`
	// LastRotation is the policy's last successful rotation.
	LastRotation time.Time `json:"last_rotation"`
	// NextRotation is when an active key becomes due (created_at + max_age
	// - rotate_before); zero for every other key.
	NextRotation time.Time `json:"next_rotation"`
}

// PolicyInfo is one configured policy as the report saw it. It lets the
// -fail-on gate and the metrics see a policy that has no key at all, which
// no Row can show.
type PolicyInfo struct {
	Name          string `json:"name"`
	Provider      string `json:"provider"`
	ProjectID     int64  `json:"project_id"`
	MaxAgeSeconds int64  `json:"max_age_seconds"`
	// Failing mirrors the policy's failing flag in state.
	Failing bool `json:"failing"`
}

// Report is the compliance report. Summary counts rows by status and always
// holds every status, zeros included, so consumers need no default.
type Report struct {
	GeneratedAt time.Time      `json:"generated_at"`
	Keys        []Row          `json:"keys"`
	Summary     map[string]int `json:"summary"`
	// Policies are the configured policies, in config order.
	Policies []PolicyInfo `json:"policies"`
	// Warnings are things the report could not see or found inconsistent:
	// a provider listing that failed, a recorded key missing on the
	// provider, keys of a policy no longer configured.
	Warnings []string `json:"warnings,omitempty"`
	// AuditHead is the head of the audit log ("SEQ:HASH") when the report
	// was generated: printed, it lets a later `audit verify -expect-head`
	// catch a cut or rewritten log (DESIGN.md §11). Empty when unknown.
	AuditHead string `json:"audit_head,omitempty"`

	// Instances are the running machines of the last listings and the key
	// each was provisioned with (DESIGN.md §9.1); see instances.go.
	Instances []InstanceRow `json:"instances"`
	// InstanceSummary counts Instances by key status, every status present.
	InstanceSummary map[string]int `json:"instance_summary"`
	// Inventory says, per account listed, how fresh its listing is.
	Inventory []InventoryInfo `json:"inventory"`
	// Hosts are the hosts of the policies with a hosts block (DESIGN.md
	// §9.2), and HostsSummary counts them by status; both empty without.
	Hosts        []HostRow      `json:"hosts,omitempty"`
	HostsSummary map[string]int `json:"hosts_summary,omitempty"`
}

// Source is what a report is generated from.
type Source struct {
	// Now is the time ages are measured at; zero means time.Now().
	Now    time.Time
	Config *policy.Config
	State  interface {
		View(fn func(tx state.Tx) error) error
	}
	// Providers by provider name. Nil means state only: no listing, so no
	// unmanaged or unrecorded orphan rows and no default flags. Metrics use
	// that, since a scrape must not call provider APIs.
	Providers map[string]cloud.Provider
}

// listConcurrency bounds the provider listings run at once: enough to hide
// latency with many Gcore projects, few enough to stay far below any rate
// limit.
const listConcurrency = 4

// account is one provider account: a provider and, for Gcore, a project.
type account struct {
	provider string
	project  int64
}

// keyRef names a key across accounts.
type keyRef struct {
	account
	id string
}

// listedKey is a listed key and whether a state record claims it.
type listedKey struct {
	key     *cloud.Key
	claimed bool
}

// Generate builds the report. A provider whose listing fails degrades that
// account to state-only rows plus a warning; only an unreadable state file
// (or a cancelled ctx) fails the whole report.
func Generate(ctx context.Context, src Source) (*Report, error) {
	if src.Config == nil || src.State == nil {
		return nil, errors.New("generate report: config and state are required")
	}
	now := src.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC()
	g := &generator{
		cfg:      src.Config,
		now:      now,
		policies: make(map[string]*policy.Policy, len(src.Config.Policies)),
		byAcct:   make(map[account][]*policy.Policy),
		report:   &Report{GeneratedAt: now, Keys: []Row{}, Summary: make(map[string]int, len(statuses))},
	}
	for i := range src.Config.Policies {
		p := &src.Config.Policies[i]
		g.policies[p.Name] = p
		a := account{p.Provider, p.ProjectID}
		if _, seen := g.byAcct[a]; !seen {
			g.accounts = append(g.accounts, a)
		}
		g.byAcct[a] = append(g.byAcct[a], p)
	}

	// List before reading state: a key uploaded between the two reads is
	// then recorded (as pending) in the state snapshot, rather than listed
	// without a record and misreported as an orphan.
	if src.Providers != nil {
		g.list(ctx, src.Providers)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("generate report: %w", err)
		}
	}
	if err := src.State.View(func(tx state.Tx) error {
		if err := g.readState(tx); err != nil {
			return err
		}
		return g.addHosts(tx, src.Config)
	}); err != nil {
		return nil, fmt.Errorf("generate report: read state: %w", err)
	}
	g.addUnrecorded()
	g.finish(src.Config.Policies)
	return g.report, nil
}

// generator holds the indexes of one Generate call.
type generator struct {
	cfg      *policy.Config
	now      time.Time
	policies map[string]*policy.Policy
	accounts []account // config order, each once
	byAcct   map[account][]*policy.Policy
	report   *Report

	listings map[account][]cloud.Key // accounts listed successfully
	// listed indexes every listed key and marks those a record claims.
	listed map[keyRef]listedKey

	inv        *inventory.Result
	exposed    map[exposedRef]bool
	status     map[string]state.PolicyStatus
	lastActive map[string]time.Time // newest ActivatedAt of an active key, per policy
	hasActive  map[string]bool
	removed    map[string]int // keys of policies no longer configured
}

// list lists every account concurrently and indexes the keys.
func (g *generator) list(ctx context.Context, providers map[string]cloud.Provider) {
	results := make([][]cloud.Key, len(g.accounts))
	errs := make([]error, len(g.accounts))
	sem := make(chan struct{}, listConcurrency)
	var wg sync.WaitGroup
	for i, a := range g.accounts {
		p := providers[a.provider]
		if p == nil {
			errs[i] = errors.New("no client for this provider")
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			keys, err := p.List(ctx, a.project)
			if err != nil {
				errs[i] = err
				return
			}
			results[i] = keys
		})
	}
	wg.Wait()

	g.listings = make(map[account][]cloud.Key, len(g.accounts))
	g.listed = make(map[keyRef]listedKey)
	for i, a := range g.accounts {
		if errs[i] != nil {
			g.warn("provider %s: list keys%s: %v; showing recorded keys only", a.provider, projectSuffix(a.project), errs[i])
			continue
		}
		g.listings[a] = results[i]
		for j := range results[i] {
			k := &results[i][j]
			g.listed[keyRef{a, k.ID}] = listedKey{key: k}
		}
	}
}

func projectSuffix(project int64) string {
	if project == 0 {
		return ""
	}
	return fmt.Sprintf(" (project %d)", project)
}

// warn records a warning. Warnings quote provider errors, and a provider
// that generated a key pair could echo it in a message: an error that
// mentions a private key is withheld rather than risk printing one.
func (g *generator) warn(format string, args ...any) {
	for i, a := range args {
		if err, ok := a.(error); ok && strings.Contains(err.Error(), "PRIVATE KEY") {
			args[i] = "[error text withheld: it quoted key material]"
		}
	}
	g.report.Warnings = append(g.report.Warnings, fmt.Sprintf(format, args...))
}

// readState turns every key record into a row (or skips it) and loads the
// policies' status.
func (g *generator) readState(tx state.Tx) error {
	head, err := tx.AuditHead()
	if err != nil {
		return err
	}
	if head.Seq > 0 {
		g.report.AuditHead = head.String()
	}
	g.status = make(map[string]state.PolicyStatus, len(g.policies))
	g.lastActive = make(map[string]time.Time, len(g.policies))
	g.hasActive = make(map[string]bool, len(g.policies))
	g.removed = make(map[string]int)
	if err := g.readInventory(tx); err != nil {
		return err
	}
	if err := tx.ForEachPolicyStatus(func(s state.PolicyStatus) error {
		if _, ok := g.policies[s.Name]; ok {
			g.status[s.Name] = s
		}
		return nil
	}); err != nil {
		return err
	}
	return tx.ForEachKey(func(rec state.KeyRecord) error {
		g.addRecord(rec)
		return nil
	})
}

// addRecord adds the row of one key record.
func (g *generator) addRecord(rec state.KeyRecord) {
	p := g.policies[rec.Policy]
	a := account{rec.Provider, rec.ProjectID}
	if a.provider == "" && p != nil {
		// A record written without its account: the policy's is the best
		// guess.
		a = account{p.Provider, p.ProjectID}
	}
	ref := keyRef{a, rec.KeyID}
	lk, found := g.listed[ref]
	if found && !lk.claimed {
		// Any record, deleted ones included, claims its key: a key rotatord
		// deleted but the provider still lists is not an orphan.
		lk.claimed = true
		g.listed[ref] = lk
	}
	pk := lk.key
	_, listedOK := g.listings[a]

	policyName := rec.Policy
	if p != nil {
		// Share the config's strings: with 100,000 rows, one copy per row
		// of the policy and provider names adds up.
		policyName = p.Name
		if a.provider == p.Provider {
			a.provider = p.Provider
		}
	}
	row := Row{
		Policy: policyName, Provider: a.provider, ProjectID: a.project,
		KeyID: rec.KeyID, KeyName: rec.Name, Fingerprint: rec.Fingerprint,
		CreatedAt: rec.CreatedAt,
	}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = rec.ActivatedAt
	}
	if pk != nil {
		row.Default = pk.Default
		row.KeyName = cmp.Or(row.KeyName, pk.Name)
		row.Fingerprint = cmp.Or(row.Fingerprint, pk.Fingerprint)
		if row.CreatedAt.IsZero() {
			row.CreatedAt = pk.CreatedAt
		}
	}
	if p != nil {
		row.MaxAgeSeconds = seconds(p.MaxAge)
	}
	age := g.age(row.CreatedAt)
	row.AgeSeconds = seconds(age)

	switch {
	case g.exposed[exposedRef{rec.Policy, rec.KeyID}] && rec.Status != state.KeyActive && rec.Status != state.KeyPending:
		// Retired, deleted or orphaned, and a machine still runs with it.
		row.Status = StatusExposed
	case rec.Status == state.KeyDeleted:
		return
	case rec.Status == state.KeyPending:
		// Mid-rotation: the key is real only once the provider shows it;
		// without a listing it may never have been uploaded.
		if pk == nil {
			return
		}
		row.Status = StatusOK
	case p == nil:
		// Its policy was removed from the config: nobody rotates or
		// deletes this key any more.
		g.removed[rec.Policy]++
		row.Status = StatusOrphaned
	case rec.Status == state.KeyActive:
		row.Status = classify(age, p.MaxAge, p.RotateBefore, g.status[p.Name].Failing)
		if g.exposed[exposedRef{rec.Policy, rec.KeyID}] {
			row.Status = StatusExposed // past max_age, on running machines
		}
		row.NextRotation = row.CreatedAt.Add(p.MaxAge - p.RotateBefore)
		g.hasActive[p.Name] = true
		if rec.ActivatedAt.After(g.lastActive[p.Name]) {
			g.lastActive[p.Name] = rec.ActivatedAt
		}
		if listedOK && pk == nil {
			g.warn("policy %s: active key %s (%s) is not on provider %s%s: deleted out of band?",
				p.Name, rec.KeyID, rec.Name, a.provider, projectSuffix(a.project))
		}
	case rec.Status == state.KeyRetiring, rec.Status == state.KeySuperseded:
		// A superseded key is still on the provider and still valid; it is
		// retiring in every sense an auditor cares about.
		row.Status = StatusRetiring
	default:
		// KeyOrphaned, or a status from a newer build: either way no
		// completed rotation vouches for the key.
		row.Status = StatusOrphaned
	}
	g.report.Keys = append(g.report.Keys, row)
}

// addUnrecorded adds the listed keys no record claims: orphans when they
// carry a policy's naming scheme, unmanaged otherwise. Each account is
// listed once, so a key on an account several policies share shows once.
func (g *generator) addUnrecorded() {
	for _, a := range g.accounts {
		for _, k := range g.listings[a] {
			if g.listed[keyRef{a, k.ID}].claimed {
				continue
			}
			row := Row{
				Provider: a.provider, ProjectID: a.project, KeyID: k.ID, KeyName: k.Name,
				Fingerprint: k.Fingerprint, CreatedAt: k.CreatedAt, Default: k.Default,
				AgeSeconds: seconds(g.age(k.CreatedAt)), Status: StatusUnmanaged,
			}
			for _, p := range g.byAcct[a] {
				if p.OwnsKeyName(k.Name) {
					row.Policy, row.Status, row.MaxAgeSeconds = p.Name, StatusOrphaned, seconds(p.MaxAge)
					break
				}
			}
			g.report.Keys = append(g.report.Keys, row)
		}
	}
}

// finish fills the per-policy fields, the summary, the policy list and the
// warnings that need every row, then sorts.
func (g *generator) finish(policies []policy.Policy) {
	last := make(map[string]time.Time, len(policies))
	for _, p := range policies {
		st := g.status[p.Name]
		last[p.Name] = latest(st.LastSuccess, g.lastActive[p.Name])
		g.report.Policies = append(g.report.Policies, PolicyInfo{
			Name: p.Name, Provider: p.Provider, ProjectID: p.ProjectID,
			MaxAgeSeconds: seconds(p.MaxAge), Failing: st.Failing,
		})
		if !g.hasActive[p.Name] {
			if st.Failing {
				g.warn("policy %s is failing (%d consecutive failures) and has no active key", p.Name, st.ConsecutiveFailures)
			} else {
				g.warn("policy %s has no active key", p.Name)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(g.removed)) {
		g.warn("policy %s is no longer configured: its %d remaining key(s) are reported as orphaned", name, g.removed[name])
	}
	for _, s := range statuses {
		g.report.Summary[s] = 0
	}
	for i := range g.report.Keys {
		r := &g.report.Keys[i]
		g.report.Summary[r.Status]++
		if t, ok := last[r.Policy]; ok {
			r.LastRotation = t
		}
	}
	slices.SortFunc(g.report.Keys, compareRows)
	g.finishInstances()
}

// policiesFirst orders what belongs to a policy before what belongs to
// none (unmanaged keys, unattributed machines).
func policiesFirst(a, b string) int {
	switch {
	case (a == "") == (b == ""):
		return 0
	case a == "":
		return 1
	default:
		return -1
	}
}

// compareRows orders rows by policy, provider, project, creation time and
// key ID, with unmanaged rows (no policy) last.
func compareRows(a, b Row) int {
	return cmp.Or(
		policiesFirst(a.Policy, b.Policy),
		cmp.Compare(a.Policy, b.Policy),
		cmp.Compare(a.Provider, b.Provider),
		cmp.Compare(a.ProjectID, b.ProjectID),
		a.CreatedAt.Compare(b.CreatedAt),
		cmp.Compare(a.KeyID, b.KeyID),
	)
}

// classify is the status of an active key of the given age; see the
// status constants for the precedence.
func classify(age, maxAge, rotateBefore time.Duration, failing bool) string {
	switch {
	case age >= maxAge:
		return StatusOverdue
	case failing:
		return StatusFailing
	case age >= maxAge-rotateBefore:
		return StatusDue
	default:
		return StatusOK
	}
}

// age is how old a key created at t is; zero for an unknown creation time
// or a clock running behind the provider's.
func (g *generator) age(created time.Time) time.Duration {
	if created.IsZero() || created.After(g.now) {
		return 0
	}
	return g.now.Sub(created)
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
