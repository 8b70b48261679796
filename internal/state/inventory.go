package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Inventory is the last listing of one provider account's machines
// (DESIGN.md §9.1): which instances run and the key each was provisioned
// with. It is replaced as a whole by each listing, so the report, the
// metrics and status read the machines without calling a provider.
//
// A listing that fails keeps the last good instances: ListedAt stays at
// the last complete listing and StaleSince says since when the listings
// fail. A partial listing (one region or one detail call failed) stores
// what it read merged with the last good instances and is stale too.
type Inventory struct {
	Provider  string `json:"provider"`
	ProjectID int64  `json:"project_id,omitzero"`
	// Instances are the machines, in the order the listing returned them.
	Instances []InventoryInstance `json:"-"`
	// ListedAt is when the last complete listing started; zero when none
	// ever completed.
	ListedAt time.Time `json:"listed_at,omitzero"`
	// AttemptedAt is when the last listing, complete or not, started.
	AttemptedAt time.Time `json:"attempted_at,omitzero"`
	// StaleSince is when the first listing failed since the last complete
	// one; zero while the inventory is fresh.
	StaleSince time.Time `json:"stale_since,omitzero"`
	// Error is why the last listing failed or was partial. It never holds
	// a credential (provider errors do not carry one) and is scrubbed of
	// key material like every stored text.
	Error string `json:"error,omitzero"`
}

// Stale reports whether the instances may be out of date: the last
// listing failed in whole or in part, or none ever completed.
func (inv Inventory) Stale() bool { return !inv.StaleSince.IsZero() || inv.ListedAt.IsZero() }

// InventoryInstance is one machine as listed (cloud.Instance, stored).
type InventoryInstance struct {
	ID             string    `json:"id"`
	Name           string    `json:"name,omitzero"`
	Status         string    `json:"status,omitzero"`
	Region         string    `json:"region,omitzero"`
	RegionID       int64     `json:"region_id,omitzero"`
	ProjectID      int64     `json:"project_id,omitzero"`
	KeyName        string    `json:"key_name,omitzero"`
	KeyID          string    `json:"key_id,omitzero"`
	KeyFingerprint string    `json:"key_fingerprint,omitzero"`
	Address        string    `json:"address,omitzero"`
	User           string    `json:"user,omitzero"`
	Port           int       `json:"port,omitzero"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	Kind           string    `json:"kind,omitzero"`
}

// Exposure marks a key that was found exposed (a machine still runs with
// a key rotatord retired or deleted, or one past max_age) and announced.
// The mark makes the exposed event go out once per key, not once per run.
type Exposure struct {
	Policy      string `json:"policy"`
	KeyID       string `json:"key_id"`
	KeyName     string `json:"key_name,omitzero"`
	Fingerprint string `json:"fingerprint,omitzero"`
	// Since is when the exposure was first found.
	Since time.Time `json:"since"`
	// Instances is how many machines ran on the key when it was found.
	Instances int `json:"instances,omitzero"`
	// EventID is the outbox event that announced it, if one was queued.
	EventID string `json:"event_id,omitzero"`
}

// Inventory storage: the header (everything but the instances) under the
// account, and the instances in chunks under the account plus the chunk
// number, so that no single value grows past what etcd accepts in one
// request (1.5 MiB by default) even for accounts of many thousand machines.
const (
	bucketInventory      = "inventory"           // provider \x00 be64(project) -> Inventory header
	bucketInventoryChunk = "inventory_instances" // provider \x00 be64(project) be32(n) -> []InventoryInstance
	bucketExposures      = "exposures"           // policy \x00 keyID -> Exposure
	inventoryChunk       = 500
)

func inventoryKey(provider string, project int64) []byte {
	return policyKey(provider, binary.BigEndian.AppendUint64(nil, uint64(project)))
}

// PutInventory replaces the stored inventory of inv's account.
func (t *tx) PutInventory(inv Inventory) error {
	if inv.Provider == "" {
		return errors.New("put inventory: empty provider")
	}
	inv.ListedAt, inv.AttemptedAt, inv.StaleSince = utc(inv.ListedAt), utc(inv.AttemptedAt), utc(inv.StaleSince)
	key := inventoryKey(inv.Provider, inv.ProjectID)
	where := fmt.Sprintf("put inventory of %s%s", inv.Provider, projectSuffix(inv.ProjectID))
	head, err := encode(inv)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if err := t.deleteChunks(key); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	for n := 0; n*inventoryChunk < len(inv.Instances); n++ {
		chunk := slices.Clone(inv.Instances[n*inventoryChunk : min((n+1)*inventoryChunk, len(inv.Instances))])
		for i := range chunk {
			chunk[i].CreatedAt = utc(chunk[i].CreatedAt)
		}
		v, err := encode(chunk)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if err := t.kv.Put(bucketInventoryChunk, binary.BigEndian.AppendUint32(slices.Clone(key), uint32(n)), v); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	if err := t.kv.Put(bucketInventory, key, head); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// deleteChunks removes every instance chunk of an account. Keys are
// collected first: a scan must not write to the bucket it scans.
func (t *tx) deleteChunks(key []byte) error {
	var old [][]byte
	if err := t.kv.Scan(bucketInventoryChunk, key, false, func(k, _ []byte) error {
		if len(k) == len(key)+4 {
			old = append(old, slices.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range old {
		if err := t.kv.Delete(bucketInventoryChunk, k); err != nil {
			return err
		}
	}
	return nil
}

// Inventory returns the stored inventory of one account and whether one
// is stored.
func (t *tx) Inventory(provider string, project int64) (Inventory, bool, error) {
	key := inventoryKey(provider, project)
	v, err := t.kv.Get(bucketInventory, key)
	if err != nil {
		return Inventory{}, false, fmt.Errorf("read inventory of %s%s: %w", provider, projectSuffix(project), err)
	}
	if v == nil {
		return Inventory{}, false, nil
	}
	inv, err := t.decodeInventory(key, v)
	return inv, err == nil, err
}

// ForEachInventory calls fn for every stored inventory, in provider then
// project order, stopping at the first error, which it returns.
func (t *tx) ForEachInventory(fn func(Inventory) error) error {
	type raw struct{ k, v []byte }
	var all []raw
	if err := t.kv.Scan(bucketInventory, nil, false, func(k, v []byte) error {
		all = append(all, raw{slices.Clone(k), slices.Clone(v)})
		return nil
	}); err != nil {
		return fmt.Errorf("read inventories: %w", err)
	}
	for _, r := range all {
		inv, err := t.decodeInventory(r.k, r.v)
		if err != nil {
			return err
		}
		if err := fn(inv); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) decodeInventory(key, head []byte) (Inventory, error) {
	provider, _ := splitPolicyKey(key)
	var inv Inventory
	if err := json.Unmarshal(head, &inv); err != nil {
		return Inventory{}, fmt.Errorf("decode inventory of %s: %w", provider, err)
	}
	err := t.kv.Scan(bucketInventoryChunk, key, false, func(k, v []byte) error {
		if len(k) != len(key)+4 {
			return nil
		}
		var chunk []InventoryInstance
		if err := json.Unmarshal(v, &chunk); err != nil {
			return fmt.Errorf("decode inventory of %s%s, chunk %d: %w", provider, projectSuffix(inv.ProjectID), binary.BigEndian.Uint32(k[len(key):]), err)
		}
		inv.Instances = append(inv.Instances, chunk...)
		return nil
	})
	if err != nil {
		return Inventory{}, err
	}
	return inv, nil
}

// MarkInventoryStale updates the header of the account's inventory only.
func (t *tx) MarkInventoryStale(provider string, project int64, at time.Time, errText string) error {
	if provider == "" {
		return errors.New("mark inventory stale: empty provider")
	}
	key := inventoryKey(provider, project)
	where := fmt.Sprintf("mark inventory of %s%s stale", provider, projectSuffix(project))
	inv := Inventory{Provider: provider, ProjectID: project}
	v, err := t.kv.Get(bucketInventory, key)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if v != nil {
		if err := json.Unmarshal(v, &inv); err != nil {
			return fmt.Errorf("%s: decode: %w", where, err)
		}
	}
	inv.AttemptedAt, inv.Error = utc(at), errText
	if inv.StaleSince.IsZero() {
		inv.StaleSince = utc(at)
	}
	head, err := encode(inv)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if err := t.kv.Put(bucketInventory, key, head); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// PutExposure records that x.KeyID of x.Policy was found exposed.
func (t *tx) PutExposure(x Exposure) error {
	if x.Policy == "" || x.KeyID == "" {
		return fmt.Errorf("put exposure %q/%q: policy and key ID are required", x.Policy, x.KeyID)
	}
	x.Since = utc(x.Since)
	v, err := encode(x)
	if err != nil {
		return fmt.Errorf("put exposure %s/%s: %w", x.Policy, x.KeyID, err)
	}
	if err := t.kv.Put(bucketExposures, policyKey(x.Policy, []byte(x.KeyID)), v); err != nil {
		return fmt.Errorf("put exposure %s/%s: %w", x.Policy, x.KeyID, err)
	}
	return nil
}

// Exposure returns the exposure mark of one key and whether it exists.
func (t *tx) Exposure(policy, keyID string) (Exposure, bool, error) {
	v, err := t.kv.Get(bucketExposures, policyKey(policy, []byte(keyID)))
	if err != nil {
		return Exposure{}, false, fmt.Errorf("read exposure %s/%s: %w", policy, keyID, err)
	}
	if v == nil {
		return Exposure{}, false, nil
	}
	var x Exposure
	if err := json.Unmarshal(v, &x); err != nil {
		return Exposure{}, false, fmt.Errorf("decode exposure %s/%s: %w", policy, keyID, err)
	}
	return x, true, nil
}

// ForEachExposure calls fn for every exposure mark, in policy then key ID
// order, stopping at the first error, which it returns.
func (t *tx) ForEachExposure(fn func(Exposure) error) error {
	return t.kv.Scan(bucketExposures, nil, false, func(k, v []byte) error {
		var x Exposure
		if err := json.Unmarshal(v, &x); err != nil {
			policy, id := splitPolicyKey(k)
			return fmt.Errorf("decode exposure %s/%s: %w", policy, id, err)
		}
		return fn(x)
	})
}

func projectSuffix(project int64) string {
	if project == 0 {
		return ""
	}
	return fmt.Sprintf(" (project %d)", project)
}
