package gcore

import (
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

// suiteConfig is the client as the daemon builds it, with waits shortened
// so the suite's hung requests and retries take milliseconds. Backoff uses
// the real timer: the suite measures that Retry-After is honoured.
func suiteConfig(baseURL string, apiKey secret.Secret) Config {
	return Config{
		Name: "gcore-suite", BaseURL: baseURL, APIKey: apiKey,
		RateLimit: 200,
		Timeout:   500 * time.Millisecond,
		Retry:     httpapi.RetryConfig{MaxAttempts: 4, BaseDelay: 10 * time.Millisecond, MaxDelay: 2 * time.Second},
		UserAgent: "rotatord/test",
	}
}

func TestClient_Conformance(t *testing.T) {
	cloudtest.RunProviderSuite(t, Type, func(t *testing.T, baseURL string, apiKey secret.Secret) cloud.Provider {
		c, err := New(suiteConfig(baseURL, apiKey))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return c
	})
}
