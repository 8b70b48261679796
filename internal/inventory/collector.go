package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Lister lists one provider account's machines: the Gcore and Sesterce
// clients implement it (see cloud.Instance for the contract: a partial
// listing returns what it read and an error).
type Lister interface {
	ListInstances(ctx context.Context, project int64, regions []int64) ([]cloud.Instance, error)
}

// Store is the state the collector reads and writes.
type Store interface {
	View(fn func(tx state.Tx) error) error
	Update(fn func(tx state.Tx) error) error
}

// Config wires a Collector. Store, Config and Listers are required.
type Config struct {
	Store  Store
	Config *policy.Config
	// Listers by provider name. A provider without one (or with
	// inventory: false) is not listed.
	Listers map[string]Lister
	// Flights remembers the listings made and in flight. It outlives a
	// reload (the daemon keeps one for the process), so that the runs of
	// the old and the new config share listings too.
	Flights *Flights
	Logger  *slog.Logger
	Now     func() time.Time
	// Sinks names the outbox sinks that take events of kind from policy p
	// (Slack, webhooks); nil queues no event.
	Sinks func(p policy.Policy, kind string) []string
	// Kick wakes the notifiers after events were queued.
	Kick func()
	// Timeout bounds one account's listing (default 10m): a provider that
	// drips a huge body must not hold a run forever.
	Timeout time.Duration
	// Concurrency bounds the accounts listed at once (default 4).
	Concurrency int
}

// Collector lists accounts once per run and records what it found.
type Collector struct {
	cfg Config
	log *slog.Logger
}

// Flights is the record of listings shared across runs and reloads: per
// account, the last one started and whether it is still in flight.
type Flights struct {
	mu sync.Mutex
	m  map[Account]*flight
}

type flight struct {
	started time.Time
	done    chan struct{}
}

// NewFlights returns an empty record.
func NewFlights() *Flights { return &Flights{m: map[Account]*flight{}} }

// New returns a collector.
func New(cfg Config) *Collector {
	if cfg.Flights == nil {
		cfg.Flights = NewFlights()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Kick == nil {
		cfg.Kick = func() {}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	return &Collector{cfg: cfg, log: cfg.Logger}
}

// Accounts returns the accounts of policies, each once, in order.
func Accounts(policies []policy.Policy) []Account {
	var out []Account
	seen := map[Account]bool{}
	for _, p := range policies {
		a := Account{p.Provider, p.ProjectID}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// maxErrorText bounds the stored error of a failed listing: a provider
// can answer with a whole page of HTML.
const maxErrorText = 600

// Refresh lists each account of accounts unless a listing of it started at
// or after since (that is, during the caller's run) is stored or in
// flight, in which case it waits for that one: every policy of an account
// shares one listing per run. A call that listed then records new
// exposures (Evaluate); one that only waited leaves that to the lister, so
// that a hundred policies on one schedule cost one listing and one
// evaluation per tick, not a hundred.
//
// Refresh never returns a listing's failure: a failed or partial listing
// is stored as stale (see state.Inventory) and logged. It returns only
// errors of the state itself, or ctx's.
func (c *Collector) Refresh(ctx context.Context, accounts []Account, since time.Time) error {
	sem := make(chan struct{}, c.cfg.Concurrency)
	var wg sync.WaitGroup
	var listed atomic.Bool
	errs := make([]error, len(accounts))
	for i, a := range accounts {
		lister, regions, ok := c.lister(a)
		if !ok {
			continue
		}
		wg.Go(func() {
			f, mine := c.cfg.Flights.join(a, since)
			if !mine {
				select {
				case <-f.done:
				case <-ctx.Done():
				}
				return
			}
			defer close(f.done)
			listed.Store(true)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			errs[i] = c.refresh(ctx, a, lister, regions, c.cfg.Now())
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !listed.Load() {
		return nil // the listing's owner evaluates what it found
	}
	return c.Evaluate(ctx)
}

// join returns the account's listing that started at or after since (in
// flight or done), or starts a new one, which the caller then owns (mine)
// and must close.
//
// Flights run on the wall clock, like the since of the runs they serve.
func (fs *Flights) join(a Account, since time.Time) (f *flight, mine bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.m[a]; f != nil && !f.started.Before(since) {
		return f, false
	}
	f = &flight{started: time.Now(), done: make(chan struct{})}
	fs.m[a] = f
	return f, true
}

// lister returns the account's lister and regions, or false when the
// account is not listed.
func (c *Collector) lister(a Account) (Lister, []int64, bool) {
	prov, ok := c.cfg.Config.ProviderByName(a.Provider)
	if !ok || prov.NoInventory {
		return nil, nil, false
	}
	l, ok := c.cfg.Listers[a.Provider]
	return l, prov.Regions, ok && l != nil
}

// refresh lists one account and stores the listing.
func (c *Collector) refresh(ctx context.Context, a Account, l Lister, regions []int64, started time.Time) error {
	lctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	got, lerr := safeList(lctx, l, a.ProjectID, regions)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	log := c.log.With("provider", a.Provider)
	if a.ProjectID != 0 {
		log = log.With("project_id", a.ProjectID)
	}
	var stored state.Inventory
	uerr := c.cfg.Store.Update(func(tx state.Tx) error {
		prev, _, err := tx.Inventory(a.Provider, a.ProjectID)
		if err != nil {
			return err
		}
		stored = next(prev, a, got, lerr, started)
		return tx.PutInventory(stored)
	})
	if uerr != nil {
		// The listing could not be stored (on etcd: more than one request
		// holds). Say so in the small header, so the report marks the last
		// listing stale instead of passing it off as current.
		uerr = fmt.Errorf("store the inventory of %s%s: %w", a.Provider, projectSuffix(a.ProjectID), uerr)
		merr := c.cfg.Store.Update(func(tx state.Tx) error {
			return tx.MarkInventoryStale(a.Provider, a.ProjectID, started, err2text(uerr))
		})
		if merr == nil {
			log.Error("instance listing read but not stored; the inventory is stale", "instances_read", len(got), "err", err2text(uerr))
			return nil
		}
		return errors.Join(uerr, merr)
	}
	if lerr != nil {
		log.Warn("instance listing failed; the inventory is stale", "instances_read", len(got),
			"stale_since", stored.StaleSince, "err", err2text(lerr))
	} else {
		log.Info("instances listed", "instances", len(got))
	}
	return nil
}

// safeList calls the lister, turning a panic into an error: a listing
// feeds a report, and no provider response may take the daemon down.
func safeList(ctx context.Context, l Lister, project int64, regions []int64) (got []cloud.Instance, err error) {
	defer func() {
		if v := recover(); v != nil {
			got, err = nil, fmt.Errorf("list instances: internal error: %v", v)
		}
	}()
	return l.ListInstances(ctx, project, regions)
}

// next is the inventory to store after a listing that started at started
// returned got and failed with lerr (nil for a complete listing).
//
// A complete listing replaces everything. A failed one keeps the last
// good instances. A partial one stores what it read, keeps the key of a
// machine that this time came back without one (its detail call failed),
// and keeps the last good machines of the parts it could not read (a
// failed Gcore region; everything unseen when the failed part is not
// named), since a listing that failed cannot say they are gone: a stale
// report errs towards a machine too many, not a machine too few.
func next(prev state.Inventory, a Account, got []cloud.Instance, lerr error, started time.Time) state.Inventory {
	inv := state.Inventory{Provider: a.Provider, ProjectID: a.ProjectID, AttemptedAt: started}
	errText := err2text(lerr)
	if lerr == nil {
		inv.ListedAt = started
		inv.Instances = make([]state.InventoryInstance, len(got))
		for i, m := range got {
			inv.Instances[i] = stored(m)
		}
		return inv
	}
	inv.ListedAt, inv.Error = prev.ListedAt, errText
	inv.StaleSince = prev.StaleSince
	if inv.StaleSince.IsZero() {
		inv.StaleSince = started
	}
	old := make(map[string]state.InventoryInstance, len(prev.Instances))
	for _, m := range prev.Instances {
		old[m.ID] = m
	}
	seen := make(map[string]bool, len(got))
	for _, m := range got {
		s := stored(m)
		if o, ok := old[s.ID]; ok && s.KeyID == "" && s.KeyName == "" {
			s.KeyID, s.KeyName, s.KeyFingerprint = o.KeyID, o.KeyName, o.KeyFingerprint
			s.Address, s.User, s.Port = cmpOr(s.Address, o.Address), cmpOr(s.User, o.User), max(s.Port, o.Port)
		}
		seen[s.ID] = true
		inv.Instances = append(inv.Instances, s)
	}
	regions, all := failedParts(lerr)
	if len(got) == 0 {
		all = true
	}
	for _, m := range prev.Instances {
		if !seen[m.ID] && (all || regions[m.RegionID]) {
			inv.Instances = append(inv.Instances, m)
		}
	}
	return inv
}

// failedParts reads which parts of a partial listing failed from the
// subjects of its *cloud.Error values: Gcore regions ("region 76 ..."), or
// single Sesterce instances ("instance 65f...", returned without their
// key, so nothing unseen is theirs). all is set when some failure names
// no such part: then no unseen machine can be taken for gone.
func failedParts(err error) (regions map[int64]bool, all bool) {
	regions = map[int64]bool{}
	var walk func(error)
	walk = func(err error) {
		ce, ok := err.(*cloud.Error)
		if !ok {
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					walk(e)
				}
				return
			}
			if !errors.As(err, &ce) {
				all = true
				return
			}
		}
		var id int64
		switch {
		case strings.HasPrefix(ce.Subject, "instance "):
		case strings.HasPrefix(ce.Subject, "region "):
			if _, scanErr := fmt.Sscanf(ce.Subject, "region %d", &id); scanErr != nil {
				all = true
			}
			regions[id] = true
		default:
			all = true
		}
	}
	if err != nil {
		walk(err)
	}
	return regions, all
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func stored(m cloud.Instance) state.InventoryInstance {
	return state.InventoryInstance{
		ID: m.ID, Name: m.Name, Status: m.Status, Region: m.Region, RegionID: m.RegionID, ProjectID: m.ProjectID,
		KeyName: m.KeyName, KeyID: m.KeyID, KeyFingerprint: m.KeyFingerprint,
		Address: m.Address, User: m.User, Port: m.Port, CreatedAt: m.CreatedAt, Kind: m.Kind,
	}
}

// err2text is a listing error as stored and reported: bounded, one line.
func err2text(err error) string {
	if err == nil {
		return ""
	}
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && s[cut]&0xC0 == 0x80 { // not inside a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func projectSuffix(project int64) string {
	if project == 0 {
		return ""
	}
	return fmt.Sprintf(" (project %d)", project)
}

// maxListed bounds the machines an exposed event names.
const maxListed = 10

// Evaluate finds the keys that are exposed now and were never announced,
// marks them, appends an audit entry and queues one exposed event for
// each. It reads state only, so the retire sweep can call it after a
// deletion without listing anything.
func (c *Collector) Evaluate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := c.cfg.Now()
	fresh := func(tx state.Tx) ([]ExposedKey, *Result, error) {
		res, err := Attribute(tx, c.cfg.Config, now)
		if err != nil {
			return nil, nil, err
		}
		var out []ExposedKey
		for _, x := range res.Exposed {
			_, marked, err := tx.Exposure(x.Policy, x.KeyID)
			if err != nil {
				return nil, nil, err
			}
			if !marked {
				out = append(out, x)
			}
		}
		return out, res, nil
	}
	var todo []ExposedKey
	if err := c.cfg.Store.View(func(tx state.Tx) (err error) { todo, _, err = fresh(tx); return err }); err != nil || len(todo) == 0 {
		return err
	}
	var queued bool
	var announced []ExposedKey
	err := c.cfg.Store.Update(func(tx state.Tx) error {
		queued, announced = false, nil
		todo, res, err := fresh(tx)
		if err != nil {
			return err
		}
		for _, x := range todo {
			p, _ := c.cfg.Config.PolicyByName(x.Policy)
			detail := describe(x, res)
			mark := state.Exposure{Policy: x.Policy, KeyID: x.KeyID, KeyName: x.KeyName, Fingerprint: x.Fingerprint,
				Since: now, Instances: len(x.Instances)}
			if err := tx.AppendAudit(audit.Entry{Time: now, Policy: x.Policy, Provider: x.Provider, Event: audit.EventExposed,
				Trigger: "inventory", KeyID: x.KeyID, KeyName: x.KeyName, Fingerprint: x.Fingerprint, Detail: detail}); err != nil && !errors.Is(err, state.ErrNoAuditKey) {
				return err
			}
			if sinks := c.sinks(p, x.Policy); len(sinks) > 0 {
				ev := state.Event{Kind: policy.EventExposed, Policy: x.Policy, Provider: x.Provider, ProjectID: x.ProjectID,
					Channel: p.Notify.Channel, KeyID: x.KeyID, KeyName: x.KeyName, OldFingerprint: x.Fingerprint,
					VaultPath: p.VaultPath, Detail: detail, Time: now}
				id, err := tx.Enqueue(ev, sinks...)
				if err != nil {
					return err
				}
				mark.EventID, queued = id, true
			}
			if err := tx.PutExposure(mark); err != nil {
				return err
			}
			announced = append(announced, x)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record exposed keys: %w", err)
	}
	for _, x := range announced {
		c.log.Warn("key exposed: running machines were launched with it", "policy", x.Policy, "key_id", x.KeyID,
			"fingerprint", x.Fingerprint, "instances", len(x.Instances), "why", x.Why)
	}
	if queued {
		c.cfg.Kick()
	}
	return nil
}

func (c *Collector) sinks(p policy.Policy, name string) []string {
	if c.cfg.Sinks == nil || p.Name != name {
		return nil // a policy no longer configured has nobody to tell
	}
	return c.cfg.Sinks(p, policy.EventExposed)
}

// describe is the detail text of an exposed event: why, how many
// machines, and the first few by name and address.
func describe(x ExposedKey, res *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "key %s (%s) still opens %d running machine(s): ", x.KeyName, x.Why, len(x.Instances))
	for i, idx := range x.Instances {
		if i == maxListed {
			fmt.Fprintf(&b, ", and %d more", len(x.Instances)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		m := res.Instances[idx]
		b.WriteString(cmpOr(m.Name, m.ID))
		if m.Address != "" {
			b.WriteString(" (" + m.Address + ")")
		}
	}
	return b.String()
}
