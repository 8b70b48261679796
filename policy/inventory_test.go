package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestParse_inventoryKeys(t *testing.T) {
	const doc = `
vault: {address: https://vault.internal:8200}
providers:
  - {name: gcore-prod, type: gcore, api_key_env: GCORE_API_KEY, regions: [76, 124]}
  - {name: gcore-quiet, type: gcore, api_key_env: GCORE_API_KEY, inventory: false}
  - {name: sesterce-prod, type: sesterce, api_key_env: SESTERCE_API_KEY}
policies:
  - {name: inference, provider: gcore-prod, project_id: 1, vault_path: ssh/a}
`
	cfg, err := Parse(strings.NewReader(doc), "inv.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g, q, s := cfg.Providers[0], cfg.Providers[1], cfg.Providers[2]
	if !slices.Equal(g.Regions, []int64{76, 124}) || g.NoInventory {
		t.Errorf("gcore-prod: regions %v, no inventory %v; want [76 124], inventory on", g.Regions, g.NoInventory)
	}
	if !q.NoInventory || s.NoInventory || s.Regions != nil {
		t.Errorf("inventory: false gave NoInventory %v; the default gave %v (regions %v)", q.NoInventory, s.NoInventory, s.Regions)
	}
	if p := cfg.Policies[0]; !p.Notify.Wants(EventExposed) {
		t.Errorf("default notify.on %v lacks %s", p.Notify.On, EventExposed)
	}
}
