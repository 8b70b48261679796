package daemon

import (
	"context"
	"time"

	"github.com/rotatord/rotatord/internal/inventory"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// inventoryHosts is the HostSource of hosts.discover: the running machines
// the last inventory listings attributed to the policy's keys (DESIGN.md
// §9.1), with the login user and port where the provider says. It reads
// state only; the daemon's runs keep the listings current. A machine of a
// stale listing is still dialled: it may be gone (then it is unreachable),
// but a machine missed is a machine that keeps a retired key.
type inventoryHosts struct {
	a   *App
	cfg *policy.Config
}

var _ rotate.HostSource = inventoryHosts{}

func (s inventoryHosts) Instances(_ context.Context, p policy.Policy) ([]rotate.DiscoveredHost, error) {
	targets, err := inventory.Targets(s.a.db, s.cfg, time.Now())
	if err != nil {
		return nil, err
	}
	var out []rotate.DiscoveredHost
	for _, t := range targets[p.Name] {
		out = append(out, rotate.DiscoveredHost{Address: t.Address, Port: t.Port, User: t.User, InstanceID: t.InstanceID})
	}
	return out, nil
}

// hostSource is the engine's HostSource for cfg: Options.HostSource when
// set (tests), else the inventory.
func (a *App) hostSource(cfg *policy.Config) rotate.HostSource {
	if a.opts.HostSource != nil {
		return a.opts.HostSource
	}
	return inventoryHosts{a: a, cfg: cfg}
}
