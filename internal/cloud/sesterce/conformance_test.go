package sesterce

import (
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

// suiteConfig is the client as the daemon builds it, with backoff shortened
// to milliseconds. The per-attempt timeout is the most the suite allows
// (2s): its oversized-body checks must read 4 MiB within one attempt even
// on a busy machine, so a hung request costs 2s. Backoff uses the real
// timer: the suite measures that Retry-After is honoured.
func suiteConfig(baseURL string, apiKey secret.Secret) Config {
	return Config{
		Name: "sesterce-suite", BaseURL: baseURL, APIKey: apiKey,
		RateLimit: 200,
		Timeout:   2 * time.Second,
		Retry:     httpapi.RetryConfig{MaxAttempts: 4, BaseDelay: 10 * time.Millisecond, MaxDelay: 2 * time.Second},
		UserAgent: "rotatord/test",
	}
}

func suiteClient(t *testing.T, baseURL string, apiKey secret.Secret) cloud.Provider {
	c, err := New(suiteConfig(baseURL, apiKey))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func TestClient_Conformance(t *testing.T) {
	cloudtest.RunProviderSuite(t, Type, suiteClient)
}

func TestClient_InstanceConformance(t *testing.T) {
	cloudtest.RunInstanceSuite(t, Type, suiteClient)
}
