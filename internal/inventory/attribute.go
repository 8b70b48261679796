// Package inventory answers "which running machines did each key reach?"
// (DESIGN.md §9.1). Deleting an SSH-key object on a provider changes only
// what new machines get: every machine launched with a retired key keeps
// it in authorized_keys. So each run lists every account's machines once
// (Collector), stores the listing in state, and maps each machine to the
// policy whose key it was provisioned with (Attribute): Gcore names the
// key, Sesterce gives its ID. A key rotatord retired or deleted, or one
// past max_age, that a machine still runs with is exposed.
//
// The listing never fails or delays a rotation: it runs after the
// rotations of a run, and a failed or partial listing keeps the last good
// one, marked stale since the first failure.
package inventory

import (
	"cmp"
	"slices"
	"time"

	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Key statuses of a machine's key, the values of Instance.KeyStatus and
// of the key_status label of rotatord_instances.
const (
	// KeyCurrent: the policy's current key (or one being rotated in).
	KeyCurrent = "current"
	// KeyRetiring: a superseded key inside its grace period; the next
	// retirement (its deletion) leaves the machine behind.
	KeyRetiring = "retiring"
	// KeyOrphaned: a key named like the policy's keys that no completed
	// rotation owns, inside its grace period.
	KeyOrphaned = "orphaned"
	// KeyExposed: a key rotatord deleted (or that was deleted out of
	// band), whose grace period is over, or that is past max_age, while
	// the machine still runs with it.
	KeyExposed = "exposed"
	// KeyUnmanaged: a key no policy manages.
	KeyUnmanaged = "unmanaged"
	// KeyNone: the provider did not say which key the machine has (a
	// Gcore instance without ssh_key_name, a Sesterce instance that is not
	// active or whose detail call failed).
	KeyNone = "none"
)

// KeyStatuses lists every key status in the order summaries print them.
func KeyStatuses() []string {
	return []string{KeyCurrent, KeyRetiring, KeyOrphaned, KeyExposed, KeyUnmanaged, KeyNone}
}

// Account is one provider account: a provider and, on Gcore, a project.
type Account struct {
	Provider  string
	ProjectID int64
}

// Instance is one listed machine attributed to a policy and a key.
type Instance struct {
	state.InventoryInstance
	Provider string
	// Policy is the policy whose key the machine was provisioned with; ""
	// when no policy's.
	Policy string
	// KeyID and KeyName name the key: the provider's when it sent them,
	// else the matching record's (Gcore instances name their key only).
	KeyID, KeyName string
	// Fingerprint is the key's SHA256 fingerprint when known.
	Fingerprint string
	KeyStatus   string
	// Replaced is set when host rotation (§9.2) found the machine's
	// authorized_keys without the key it was provisioned with and with
	// the policy's current key: KeyStatus is then current.
	Replaced bool
}

// AccountState is how fresh one account's listing is.
type AccountState struct {
	Account
	Instances  int
	ListedAt   time.Time
	StaleSince time.Time
	Error      string
	// Never is set when no listing was ever stored for the account.
	Never bool
}

// Stale reports whether the account's machines may be out of date.
func (a AccountState) Stale() bool { return a.Never || !a.StaleSince.IsZero() || a.ListedAt.IsZero() }

// ExposedKey is one key found exposed and the machines that run with it.
type ExposedKey struct {
	Policy, Provider string
	ProjectID        int64
	KeyID, KeyName   string
	Fingerprint      string
	// Why says what made the key exposed: deleted, grace over, past max_age.
	Why string
	// Instances index Result.Instances.
	Instances []int
}

// Result is the attribution of every stored listing.
type Result struct {
	Instances []Instance
	Accounts  []AccountState
	// Exposed lists the exposed keys, by policy then key ID.
	Exposed []ExposedKey
}

// keyRef names a key record within an account: Gcore by name, Sesterce by
// ID (see match).
type keyRef struct {
	Account
	id, name string
}

// Attribute maps every machine of the stored listings of cfg's accounts to
// the policy and key it was provisioned with, as of now. It reads only tx.
//
// A Gcore machine names its key (ssh_key_name) and is matched by name; a
// Sesterce machine gives its key's ID and is matched by ID. Both fall back
// to the policies' naming scheme (name_prefix-yyyymmddThhmmss) for a key
// no record holds, which makes it orphaned.
func Attribute(tx state.Tx, cfg *policy.Config, now time.Time) (*Result, error) {
	now = now.UTC()
	policies := make(map[string]*policy.Policy, len(cfg.Policies))
	byAcct := map[Account][]*policy.Policy{}
	var accounts []Account
	for i := range cfg.Policies {
		p := &cfg.Policies[i]
		policies[p.Name] = p
		a := Account{p.Provider, p.ProjectID}
		if prov, ok := cfg.ProviderByName(p.Provider); ok && prov.NoInventory {
			continue // inventory: false; a listing stored before is not shown
		}
		if _, ok := byAcct[a]; !ok {
			accounts = append(accounts, a)
		}
		byAcct[a] = append(byAcct[a], p)
	}

	res := &Result{}
	invs := make([]state.Inventory, len(accounts))
	total := 0
	for i, a := range accounts {
		inv, ok, err := tx.Inventory(a.Provider, a.ProjectID)
		if err != nil {
			return nil, err
		}
		st := AccountState{Account: a, Never: !ok}
		if ok {
			st.Instances, st.ListedAt, st.StaleSince, st.Error = len(inv.Instances), inv.ListedAt, inv.StaleSince, inv.Error
		}
		res.Accounts = append(res.Accounts, st)
		invs[i] = inv
		total += len(inv.Instances)
	}
	if total == 0 {
		return res, nil // no machine: no key record need be read
	}

	// Index the key records by account and by how machines name keys.
	byID := map[keyRef]state.KeyRecord{}
	byName := map[keyRef]state.KeyRecord{}
	current := map[string]string{} // policy -> current key ID
	var recs []state.KeyRecord
	err := tx.ForEachKey(func(r state.KeyRecord) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	perPolicy := map[string][]state.KeyRecord{}
	for _, r := range recs {
		perPolicy[r.Policy] = append(perPolicy[r.Policy], r)
		a := Account{r.Provider, r.ProjectID}
		if p := policies[r.Policy]; p != nil && a.Provider == "" {
			a = Account{p.Provider, p.ProjectID}
		}
		id, name := keyRef{Account: a, id: r.KeyID}, keyRef{Account: a, name: r.Name}
		if old, dup := byID[id]; !dup || better(r, old) {
			byID[id] = r
		}
		if r.Name != "" {
			if old, dup := byName[name]; !dup || better(r, old) {
				byName[name] = r
			}
		}
	}
	currentFP := map[string]string{} // policy -> current key's fingerprint
	for name, rs := range perPolicy {
		if cur, ok := state.Current(rs); ok {
			current[name], currentFP[name] = cur.KeyID, cur.Fingerprint
		}
	}
	trusts, err := hostTrusts(tx)
	if err != nil {
		return nil, err
	}

	type policyKey struct{ policy, keyID string }
	exposed := map[policyKey]int{} // -> index in res.Exposed
	res.Instances = make([]Instance, 0, total)
	for ai, a := range accounts {
		for _, m := range invs[ai].Instances {
			m.ProjectID = a.ProjectID // the account's, whatever the provider sent
			in := Instance{InventoryInstance: m, Provider: a.Provider, KeyID: m.KeyID, KeyName: m.KeyName, Fingerprint: m.KeyFingerprint}
			var rec state.KeyRecord
			var found bool
			switch {
			case m.KeyID != "":
				rec, found = byID[keyRef{Account: a, id: m.KeyID}]
			case m.KeyName != "":
				rec, found = byName[keyRef{Account: a, name: m.KeyName}]
			}
			switch {
			case found:
				in.Policy = rec.Policy
				in.KeyID, in.KeyName = cmp.Or(in.KeyID, rec.KeyID), cmp.Or(in.KeyName, rec.Name)
				in.Fingerprint = cmp.Or(rec.Fingerprint, in.Fingerprint)
				var why string
				in.KeyStatus, why = keyStatus(rec, current[rec.Policy] == rec.KeyID, policies[rec.Policy], now)
				if in.KeyStatus != KeyCurrent && trusts.replaced(rec.Policy, m, in.Fingerprint, currentFP[rec.Policy]) {
					// Host rotation took the key off the machine and put
					// the current one on: it no longer opens it.
					in.KeyStatus, in.Replaced = KeyCurrent, true
				}
				if in.KeyStatus == KeyExposed {
					ref := policyKey{rec.Policy, rec.KeyID}
					i, seen := exposed[ref]
					if !seen {
						i = len(res.Exposed)
						exposed[ref] = i
						res.Exposed = append(res.Exposed, ExposedKey{Policy: rec.Policy, Provider: a.Provider, ProjectID: a.ProjectID,
							KeyID: rec.KeyID, KeyName: in.KeyName, Fingerprint: in.Fingerprint, Why: why})
					}
					res.Exposed[i].Instances = append(res.Exposed[i].Instances, len(res.Instances))
				}
			case m.KeyID == "" && m.KeyName == "":
				in.KeyStatus = KeyNone
			default:
				in.KeyStatus = KeyUnmanaged
				for _, p := range byAcct[a] {
					if p.OwnsKeyName(m.KeyName) {
						in.Policy, in.KeyStatus = p.Name, KeyOrphaned
						break
					}
				}
			}
			res.Instances = append(res.Instances, in)
		}
	}
	slices.SortFunc(res.Exposed, func(x, y ExposedKey) int {
		return cmp.Or(cmp.Compare(x.Policy, y.Policy), cmp.Compare(x.KeyID, y.KeyID))
	})
	return res, nil
}

// better reports whether record r should win over old for one name or ID:
// a key that still exists over a deleted one (Gcore reuses nothing, but a
// name can come back), else the newer.
func better(r, old state.KeyRecord) bool {
	if (r.Status == state.KeyDeleted) != (old.Status == state.KeyDeleted) {
		return old.Status == state.KeyDeleted
	}
	return r.CreatedAt.After(old.CreatedAt)
}

// keyStatus classifies a machine's key record, and says why when exposed.
func keyStatus(r state.KeyRecord, isCurrent bool, p *policy.Policy, now time.Time) (status, why string) {
	graceOver := !r.DeleteAfter.IsZero() && !r.DeleteAfter.After(now)
	switch r.Status {
	case state.KeyDeleted:
		return KeyExposed, "deleted"
	case state.KeyActive, state.KeyPending:
		if isCurrent && p != nil && !r.CreatedAt.IsZero() && now.Sub(r.CreatedAt) >= p.MaxAge {
			return KeyExposed, "past max_age"
		}
		return KeyCurrent, ""
	case state.KeyRetiring:
		if graceOver {
			return KeyExposed, "grace period over"
		}
		return KeyRetiring, ""
	case state.KeySuperseded:
		return KeyExposed, "superseded"
	default: // orphaned, or a status of a newer build
		if graceOver {
			return KeyExposed, "grace period over"
		}
		return KeyOrphaned, ""
	}
}

// Summary counts instances by key status, every status present.
func (r *Result) Summary() map[string]int {
	out := make(map[string]int, len(KeyStatuses()))
	for _, s := range KeyStatuses() {
		out[s] = 0
	}
	for _, in := range r.Instances {
		out[in.KeyStatus]++
	}
	return out
}

// NotCurrent counts, per policy, the machines that run with a key of the
// policy that is not its current one (retiring, orphaned or exposed).
func (r *Result) NotCurrent() map[string]int {
	out := map[string]int{}
	for _, in := range r.Instances {
		if in.Policy != "" && in.KeyStatus != KeyCurrent {
			out[in.Policy]++
		}
	}
	return out
}

// hostKeys are the host records of successful host rotations, by policy
// and address: what each host's authorized_keys last held.
type hostKeys map[hostRef][]state.HostRecord

type hostRef struct{ policy, address string }

// hostTrusts indexes the host records that were read successfully.
func hostTrusts(tx state.Tx) (hostKeys, error) {
	recs, err := tx.Hosts("")
	if err != nil {
		return nil, err
	}
	out := hostKeys{}
	for _, h := range recs {
		if h.LastSuccess.IsZero() || h.Address == "" {
			continue
		}
		ref := hostRef{h.Policy, h.Address}
		out[ref] = append(out[ref], h)
	}
	return out, nil
}

// replaced reports whether host rotation last found machine m (by
// address, and port when the provider gave one) trusting the policy's
// current key and no longer the key fp it was provisioned with. A machine
// no host record matches keeps its provisioned key's status: nothing says
// the key left it.
func (hk hostKeys) replaced(policy string, m state.InventoryInstance, fp, currentFP string) bool {
	if fp == "" || currentFP == "" || m.Address == "" {
		return false
	}
	for _, h := range hk[hostRef{policy, m.Address}] {
		if m.Port != 0 && h.Port != 0 && h.Port != m.Port {
			continue
		}
		if slices.Contains(h.Trusts, currentFP) && !slices.Contains(h.Trusts, fp) {
			return true
		}
	}
	return false
}
