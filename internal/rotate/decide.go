package rotate

import (
	"fmt"
	"sort"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Observation is everything one evaluation of a policy looks at.
type Observation struct {
	Now          time.Time
	Policy       policy.Policy
	ProviderKeys []cloud.Key
	Records      []state.KeyRecord // the policy's key records, any status
	Status       state.PolicyStatus
	Force        bool // rotate now whatever the key's age (SIGUSR1, socket, CLI)
}

// Decision is what the engine concluded from an Observation. It is pure
// data: Plan prints it, Run acts on it.
type Decision struct {
	// Current is the policy's active key record, nil when it has none.
	Current *state.KeyRecord
	// Rotate says a new key must be made now; Reason says why (or why not).
	Rotate bool
	Reason string
	// DueAt is when the current key must be replaced (zero without one).
	DueAt time.Time
	// Missing are recorded keys (active or retiring) that the provider no
	// longer has: deleted out of band.
	Missing []state.KeyRecord
	// Orphans are keys named like this policy's keys that no record knows:
	// debris of a crash. They are deleted after the grace period.
	Orphans []cloud.Key
	// Unmanaged are keys rotatord did not make; they are reported, never touched.
	Unmanaged []cloud.Key
	// Retire are retiring or orphaned keys whose deadline has passed.
	Retire []state.KeyRecord
	// Waiting are retiring or orphaned keys still inside their grace period.
	Waiting []state.KeyRecord
}

// Decide compares what the provider holds with what state remembers.
func Decide(o Observation) Decision {
	var d Decision
	p := o.Policy
	onProvider := make(map[string]cloud.Key, len(o.ProviderKeys))
	for _, k := range o.ProviderKeys {
		onProvider[k.ID] = k
	}
	known := make(map[string]bool, len(o.Records))
	var active []state.KeyRecord // active and on the provider as recorded
	for i := range o.Records {
		r := o.Records[i]
		known[r.KeyID] = true
		if r.Status == state.KeyDeleted {
			continue
		}
		pk, present := onProvider[r.KeyID]
		if !present || pk.State == "DELETING" {
			d.Missing = append(d.Missing, r)
			continue
		}
		switch r.Status {
		case state.KeyActive:
			if pk.Fingerprint != "" && r.Fingerprint != "" && pk.Fingerprint != r.Fingerprint {
				// Same ID, other key material: treat the record as missing.
				d.Missing = append(d.Missing, r)
				continue
			}
			active = append(active, r)
		case state.KeyRetiring, state.KeyOrphaned:
			if !r.DeleteAfter.After(o.Now) {
				d.Retire = append(d.Retire, r)
			} else {
				d.Waiting = append(d.Waiting, r)
			}
		}
	}
	if cur, ok := state.Current(active); ok {
		d.Current = &cur
	}
	for _, k := range o.ProviderKeys {
		if known[k.ID] {
			continue
		}
		if p.OwnsKeyName(k.Name) {
			d.Orphans = append(d.Orphans, k)
		} else {
			d.Unmanaged = append(d.Unmanaged, k)
		}
	}
	sort.Slice(d.Retire, func(i, j int) bool { return d.Retire[i].DeleteAfter.Before(d.Retire[j].DeleteAfter) })

	if d.Current != nil {
		d.DueAt = d.Current.CreatedAt.Add(p.MaxAge - p.RotateBefore)
	}
	switch {
	case o.Force:
		d.Rotate, d.Reason = true, "rotation requested"
	case !o.Status.NextRetry.IsZero() && o.Now.Before(o.Status.NextRetry):
		d.Reason = fmt.Sprintf("backing off after %d failure(s) until %s", o.Status.ConsecutiveFailures, o.Status.NextRetry.UTC().Format(time.RFC3339))
	case d.Current == nil && hasActive(d.Missing):
		d.Rotate, d.Reason = true, "current key missing on the provider (deleted or changed out of band)"
	case d.Current == nil:
		d.Rotate, d.Reason = true, "no managed key yet"
	case !o.Now.Before(d.DueAt):
		age := o.Now.Sub(d.Current.CreatedAt)
		d.Rotate, d.Reason = true, fmt.Sprintf("key is %s old, due at %s", FormatAge(age), d.DueAt.UTC().Format(time.RFC3339))
	default:
		d.Reason = fmt.Sprintf("key is fresh, due at %s", d.DueAt.UTC().Format(time.RFC3339))
	}
	return d
}

func hasActive(rs []state.KeyRecord) bool {
	for _, r := range rs {
		if r.Status == state.KeyActive {
			return true
		}
	}
	return false
}

// FormatAge renders a duration the way operators read key ages: 87d, 5h, 12m, 30s.
func FormatAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	default:
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
}
