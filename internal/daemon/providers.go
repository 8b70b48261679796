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

// maxConnsPerHost bounds the connections to one provider API host, shared
// by every account on it: as many as one account may have requests in
// flight, few enough that a run over hundreds of accounts on one host
// reuses connections instead of opening one per account.
const maxConnsPerHost = policy.MaxConcurrency

// providerTransport is the connection pool of every provider client in
// the process. Accounts on one API host (several Sesterce accounts, say)
// differ only in their API key header, so they share its connections;
// the App keeps one for its lifetime, across reloads.
func providerTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxConnsPerHost = maxConnsPerHost
	tr.MaxIdleConnsPerHost = maxConnsPerHost
	tr.MaxIdleConns = 0 // no bound across hosts: each host is bounded above
	return tr
}

// buildProviders makes one client per configured provider account, all
// sending through client (the App's shared pool, or the leader's fenced
// wrapper of it).
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
