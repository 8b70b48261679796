package vault

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord/internal/secret"
)

// Sentinels to branch on with errors.Is. An *Error unwraps to at most one of
// them, plus the context error when the caller's context ended.
var (
	// ErrNotFound: nothing at the path, or its latest (or asked-for)
	// version is deleted or destroyed. It also matches fs.ErrNotExist, so
	// callers that declare their own KeyStore interface (the rotation
	// engine) can branch on it without importing this package.
	ErrNotFound error = notFoundError{}
	// ErrSealed: Vault is sealed; an operator must unseal it.
	ErrSealed = errors.New("vault is sealed")
	// ErrUnreachable: no answer from Vault (connection refused, timeout,
	// DNS, TLS, or a 502/503/504 from whatever stands in front of it).
	ErrUnreachable = errors.New("vault unreachable")
	// ErrPermissionDenied: the token is invalid or expired, or its
	// policies do not allow the operation on the path; for a login, the
	// AppRole credentials were refused.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrCASMismatch: a check-and-set write found another version than
	// the one expected (someone else wrote first).
	ErrCASMismatch = errors.New("check-and-set version mismatch")
	// ErrMount: the configured mount does not exist or is not KV v2.
	ErrMount = errors.New("not a KV v2 mount")
)

type notFoundError struct{}

func (notFoundError) Error() string { return "not found" }

// Is makes errors.Is(ErrNotFound, fs.ErrNotExist) true.
func (notFoundError) Is(target error) bool { return target == fs.ErrNotExist }

// maxDetail caps the text kept from Vault's answer: a proxy in front of
// Vault may answer with a whole HTML page.
const maxDetail = 300

// Error is a failed Vault operation. It never holds a token, a secret_id or
// a data value: Detail comes from Vault's own error messages, scrubbed of
// every credential and value the Store handled in the call.
type Error struct {
	Op     string // "write", "read", "read version 3 of", "delete", "login", "check"...
	Path   string // mount-qualified path, e.g. "secret/ssh/sesterce/gpu-team"
	Status int    // HTTP status; 0 when no answer arrived
	Detail string // what Vault (or the network) said, when it adds anything
	Kind   error  // one of the sentinels above, or nil
	cause  error  // context.Canceled / DeadlineExceeded for errors.Is; never printed
}

// Error reads like "vault: write secret/ssh/x/pending: permission denied".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("vault: ")
	b.WriteString(e.Op)
	if e.Path != "" {
		b.WriteString(" ")
		b.WriteString(e.Path)
	}
	parts := make([]string, 0, 2)
	if e.Kind != nil {
		parts = append(parts, e.Kind.Error())
	}
	if e.Detail != "" {
		parts = append(parts, e.Detail)
	}
	if len(parts) == 0 && e.Status != 0 {
		parts = append(parts, "HTTP "+http.StatusText(e.Status))
	}
	for _, p := range parts {
		b.WriteString(": ")
		b.WriteString(p)
	}
	return b.String()
}

// Unwrap returns the sentinel and the context error, so that errors.Is works
// on both.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// classify turns an error of vault/api into an *Error. ctx is the caller's
// context: when it is done, the error is its cancellation, not an outage.
// scrub lists values that must not survive into the message.
func classify(ctx context.Context, op, path string, err error, scrub []string) *Error {
	e := &Error{Op: op, Path: path}
	if ctx.Err() != nil {
		e.Detail = ctx.Err().Error()
		e.cause = ctx.Err()
		return e
	}
	var re *api.ResponseError
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		e.Kind = ErrNotFound
	case errors.As(err, &re):
		e.Status = re.StatusCode
		var msgs []string
		if !re.RawError {
			// Not Vault's JSON: keep none of a body we cannot vouch for.
			msgs = vaultMessages(re.Errors)
		}
		e.Kind = kindOf(op, re.StatusCode, strings.Join(msgs, "; "))
		var rest []string
		for _, m := range msgs {
			if e.Kind == nil || !strings.EqualFold(m, e.Kind.Error()) {
				rest = append(rest, m)
			}
		}
		e.Detail = strings.Join(rest, "; ")
	default:
		e.Kind = ErrUnreachable
		e.Detail = transportDetail(err)
	}
	e.Detail = redact(e.Detail, scrub)
	return e
}

// kindOf maps an HTTP status and Vault's messages to a sentinel.
func kindOf(op string, status int, msgs string) error {
	lower := strings.ToLower(msgs)
	switch {
	case status == http.StatusForbidden:
		return ErrPermissionDenied
	case status == http.StatusServiceUnavailable && strings.Contains(lower, "sealed"):
		return ErrSealed
	case status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		return ErrUnreachable
	case status == http.StatusBadRequest && strings.Contains(lower, "check-and-set parameter did not match"):
		return ErrCASMismatch
	case status == http.StatusBadRequest && op == "login":
		// AppRole answers 400 "invalid role or secret ID".
		return ErrPermissionDenied
	case status == http.StatusNotFound && (op == "write" || strings.Contains(lower, "no handler for route")):
		// KV v2 answers reads of absent paths with 404, never writes:
		// a 404 on a write means the path is not the engine's.
		return ErrMount
	case status == http.StatusNotFound:
		return ErrNotFound
	}
	return nil
}

// vaultMessages flattens Vault's error list. Vault wraps messages from
// go-multierror ("1 error occurred:\n\t* permission denied\n\n"); only the
// messages themselves are kept, once each.
func vaultMessages(errs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range errs {
		for _, line := range strings.Split(e, "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "* "))
			if line == "" || strings.HasSuffix(line, "errors occurred:") || strings.HasSuffix(line, "error occurred:") || seen[line] {
				continue
			}
			seen[line] = true
			out = append(out, line)
		}
	}
	return out
}

// transportDetail says why no answer came, without the request URL that
// url.Error repeats.
func transportDetail(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "no answer before the timeout"
	}
	return err.Error()
}

// redact removes every listed value from s by secret.Scrub's rule (values
// shorter than secret.MinScrubLen are left alone) and caps its length.
func redact(s string, values []string) string {
	secrets := make([]secret.Secret, len(values))
	for i, v := range values {
		secrets[i] = secret.Secret(v)
	}
	s = secret.Scrub(s, secrets...)
	if len(s) > maxDetail {
		s = s[:maxDetail] + "..."
	}
	return s
}
