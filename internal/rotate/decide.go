package rotate

import (
	"fmt"
	"sort"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Observation is everything one evaluation of a policy looks at. Decide
// reads no clock: Now is the only time it knows, so tests drive it with a
// fake one.
type Observation struct {
	Now          time.Time
	Policy       policy.Policy // its Window and Jitter included
	ProviderKeys []cloud.Key
	Records      []state.KeyRecord // the policy's key records, any status
	Status       state.PolicyStatus
	Force        bool // rotate now whatever the key's age or window (SIGUSR1, socket, CLI, emergency)
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
	// OverdueAt is when the current key reaches max_age (zero without one).
	OverdueAt time.Time
	// NextWindow is when the policy's maintenance window opened, if one is
	// open at Now, or else when the next one opens; WindowCloses is when
	// that window closes. Both are zero for a policy without a window.
	NextWindow, WindowCloses time.Time
	// WaitingForWindow says a due key is held back until NextWindow.
	WaitingForWindow bool
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
		d.OverdueAt = d.Current.CreatedAt.Add(p.MaxAge)
	}
	if p.Window != nil {
		d.NextWindow, d.WindowCloses = p.Window.Next(o.Now)
	}
	// Windows hold back only a key that is merely due. A forced rotation
	// is someone asking now; with no usable key there is nothing to
	// protect from a change.
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
		d.Reason = fmt.Sprintf("key is %s old, due at %s", FormatAge(age), stamp(d.DueAt))
		d.Rotate = true
		d.decideWindow(o.Now, p.Jitter)
	default:
		d.Reason = fmt.Sprintf("key is fresh, due at %s", stamp(d.DueAt))
	}
	return d
}

// decideWindow holds a due key back until the next maintenance window,
// unless it would pass max_age first. The policy's run at that opening
// may start up to jitter late, so waiting is safe only when the key is
// still younger than max_age at NextWindow + jitter.
func (d *Decision) decideWindow(now time.Time, jitter time.Duration) {
	switch {
	case d.NextWindow.IsZero():
		// No window, or one that never opens again.
	case !now.Before(d.NextWindow):
		d.Reason += fmt.Sprintf("; maintenance window open until %s", stamp(d.WindowCloses))
	case !now.Before(d.OverdueAt):
		d.Reason += fmt.Sprintf("; it passed max_age at %s, so it does not wait for the next maintenance window (opens at %s)",
			stamp(d.OverdueAt), stamp(d.NextWindow))
	case !d.NextWindow.Add(jitter).Before(d.OverdueAt):
		d.Reason += fmt.Sprintf("; it would pass max_age at %s before the next maintenance window opens at %s, so it rotates now",
			stamp(d.OverdueAt), stamp(d.NextWindow))
	default:
		d.Rotate, d.WaitingForWindow = false, true
		d.Reason += fmt.Sprintf("; waiting for the maintenance window that opens at %s", stamp(d.NextWindow))
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

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
