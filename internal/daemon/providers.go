package daemon

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/gcore"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/cloud/sesterce"
	"github.com/rotatord/rotatord/policy"
)

// buildProviders makes one client per configured provider account. A
// non-nil client replaces the default HTTP client (the leader's fenced
// one).
func buildProviders(cfg *policy.Config, version string, log *slog.Logger, client *http.Client) (map[string]cloud.Provider, error) {
	out := make(map[string]cloud.Provider, len(cfg.Providers))
	for _, p := range cfg.Providers {
		key, err := resolveSecret(fmt.Sprintf("provider %q api key", p.Name), p.APIKeyEnv, p.APIKeyFile)
		if err != nil {
			return nil, err
		}
		hc := httpapi.Config{
			Name: p.Name, BaseURL: p.BaseURL, APIKey: key, RateLimit: p.RateLimit, Timeout: p.Timeout,
			UserAgent: "rotatord/" + version, HTTPClient: client,
			Logger: log.With("component", "cloud"),
		}
		var prov cloud.Provider
		switch p.Type {
		case policy.TypeSesterce:
			prov, err = sesterce.New(hc)
		case policy.TypeGcore:
			prov, err = gcore.New(hc)
		default:
			err = fmt.Errorf("unknown provider type %q", p.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.Name, err)
		}
		out[p.Name] = prov
	}
	return out, nil
}
