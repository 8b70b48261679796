package vault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/vault/api"
)

func TestClassify(t *testing.T) {
	refused := &url.Error{Op: "Put", URL: "http://127.0.0.1:1/v1/secret/data/ssh/x",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	tests := []struct {
		name    string
		op      string
		err     error
		kind    error
		message string
	}{
		{"forbidden", "write", &api.ResponseError{StatusCode: 403, Errors: []string{"1 error occurred:\n\t* permission denied\n\n"}},
			ErrPermissionDenied, "vault: write secret/ssh/x: permission denied"},
		{"invalid token", "read", &api.ResponseError{StatusCode: 403, Errors: []string{"2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"}},
			ErrPermissionDenied, "vault: read secret/ssh/x: permission denied: invalid token"},
		{"sealed", "write", &api.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}},
			ErrSealed, "vault: write secret/ssh/x: vault is sealed"},
		{"standby unavailable", "read", &api.ResponseError{StatusCode: 503, Errors: []string{"local node not active but active cluster node not found"}},
			ErrUnreachable, "vault: read secret/ssh/x: vault unreachable: local node not active but active cluster node not found"},
		{"bad gateway", "read", &api.ResponseError{StatusCode: 502, RawError: true, Errors: []string{"<html>proxy error</html>"}},
			ErrUnreachable, "vault: read secret/ssh/x: vault unreachable"},
		{"cas mismatch", "write", &api.ResponseError{StatusCode: 400, Errors: []string{"check-and-set parameter did not match the current version"}},
			ErrCASMismatch, "vault: write secret/ssh/x: check-and-set version mismatch: check-and-set parameter did not match the current version"},
		{"cas required", "write", &api.ResponseError{StatusCode: 400, Errors: []string{"check-and-set parameter required for this call"}},
			nil, "vault: write secret/ssh/x: check-and-set parameter required for this call"},
		{"login refused", "login", &api.ResponseError{StatusCode: 400, Errors: []string{"invalid role or secret ID"}},
			ErrPermissionDenied, "vault: login secret/ssh/x: permission denied: invalid role or secret ID"},
		{"no mount", "write", &api.ResponseError{StatusCode: 404, Errors: []string{"no handler for route \"nope/data/x\". route entry not found."}},
			ErrMount, "vault: write secret/ssh/x: not a KV v2 mount: no handler for route \"nope/data/x\". route entry not found."},
		{"write outside the engine", "write", &api.ResponseError{StatusCode: 404},
			ErrMount, "vault: write secret/ssh/x: not a KV v2 mount"},
		{"kv not found", "read", fmt.Errorf("wrapped: %w", api.ErrSecretNotFound),
			ErrNotFound, "vault: read secret/ssh/x: not found"},
		{"server error", "read", &api.ResponseError{StatusCode: 500, Errors: []string{"internal error"}},
			nil, "vault: read secret/ssh/x: internal error"},
		{"server error without message", "read", &api.ResponseError{StatusCode: 500},
			nil, "vault: read secret/ssh/x: HTTP Internal Server Error"},
		{"connection refused", "write", refused,
			ErrUnreachable, "vault: write secret/ssh/x: vault unreachable: dial tcp: connect: connection refused"},
		{"timeout", "write", &url.Error{Op: "Put", URL: "http://x", Err: context.DeadlineExceeded},
			ErrUnreachable, "vault: write secret/ssh/x: vault unreachable: no answer before the timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := classify(context.Background(), tt.op, "secret/ssh/x", tt.err, nil)
			if tt.kind != nil && !errors.Is(e, tt.kind) {
				t.Errorf("errors.Is(%q, %v) = false", e, tt.kind)
			}
			if tt.kind == nil && e.Kind != nil {
				t.Errorf("kind = %v, want none", e.Kind)
			}
			if e.Error() != tt.message {
				t.Errorf("message\n got %q\nwant %q", e.Error(), tt.message)
			}
		})
	}
}

func TestClassify_CallerContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := classify(ctx, "read", "secret/ssh/x", context.Canceled, nil)
	if !errors.Is(e, context.Canceled) {
		t.Errorf("errors.Is(%q, context.Canceled) = false", e)
	}
	if errors.Is(e, ErrUnreachable) {
		t.Errorf("a cancelled caller is reported as an outage: %q", e)
	}
}

// Vault's messages are kept for the operator, but anything the Store sent
// (a token, a secret_id, a value) is cut out should Vault or a proxy ever
// echo it.
func TestClassify_Redacts(t *testing.T) {
	const (
		token = "hvs.CAESIJ-some-token-value"
		key   = "-----BEGIN OPENSSH PRIVATE KEY-----b3BlbnNzaC1rZXk"
	)
	err := &api.ResponseError{StatusCode: 400, Errors: []string{
		"bad request with token " + token + " and body " + key,
	}}
	e := classify(context.Background(), "write", "secret/ssh/x", err, []string{token, key, "ab"})
	msg := e.Error()
	for _, v := range []string{token, key} {
		if strings.Contains(msg, v) {
			t.Errorf("message %q holds a secret", msg)
		}
	}
	if !strings.Contains(msg, "[REDACTED]") {
		t.Errorf("message %q does not show where a secret was cut", msg)
	}

	long := &api.ResponseError{StatusCode: 500, Errors: []string{strings.Repeat("x", 10_000)}}
	if n := len(classify(context.Background(), "read", "p", long, nil).Error()); n > maxDetail+100 {
		t.Errorf("a 10 kB message from Vault gives an error of %d bytes", n)
	}
}
