package inventory

import (
	"time"

	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Target is one running machine a policy's key reached, as host rotation
// (hosts.discover, DESIGN.md §9.2) dials it. User and Port are the
// provider's where it says (Sesterce sshUser, sshPort) and empty or 0
// otherwise (Gcore never says): the hosts config supplies the defaults.
type Target struct {
	Policy     string
	Provider   string
	ProjectID  int64
	Region     string
	InstanceID string
	Name       string
	Address    string
	User       string
	Port       int
	// KeyID, KeyName and KeyStatus say which of the policy's keys the
	// machine was provisioned with, and where that key stands (current,
	// retiring, orphaned, exposed).
	KeyID, KeyName, KeyStatus string
	// Stale is set when the account's last listing failed: the machine
	// may be gone.
	Stale bool
}

// Viewer reads state.
type Viewer interface {
	View(fn func(tx state.Tx) error) error
}

// Targets returns, per policy name, the machines of the stored listings
// that were provisioned with one of the policy's keys and have an address,
// in listing order. It reads state only; the daemon's runs keep the
// listings current.
func Targets(st Viewer, cfg *policy.Config, now time.Time) (map[string][]Target, error) {
	var res *Result
	if err := st.View(func(tx state.Tx) (err error) { res, err = Attribute(tx, cfg, now); return err }); err != nil {
		return nil, err
	}
	stale := map[Account]bool{}
	for _, a := range res.Accounts {
		stale[a.Account] = a.Stale()
	}
	out := map[string][]Target{}
	for _, in := range res.Instances {
		if in.Policy == "" || in.Address == "" {
			continue
		}
		out[in.Policy] = append(out[in.Policy], Target{
			Policy: in.Policy, Provider: in.Provider, ProjectID: in.ProjectID, Region: in.Region,
			InstanceID: in.ID, Name: in.Name, Address: in.Address, User: in.User, Port: in.Port,
			KeyID: in.KeyID, KeyName: in.KeyName, KeyStatus: in.KeyStatus,
			Stale: stale[Account{in.Provider, in.ProjectID}],
		})
	}
	return out, nil
}
