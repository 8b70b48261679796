package cloud

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels to branch on with errors.Is. An *Error unwraps to exactly one
// class sentinel (ErrUnauthorized, ErrNotFound, ErrRateLimited, ErrTransient
// or ErrPermanent).
var (
	// ErrUnauthorized: bad or missing credentials (401, 403, Sesterce's 404
	// "API key not found"). Permanent: retrying will not help.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: the key does not exist (already deleted).
	ErrNotFound = errors.New("not found")
	// ErrRateLimited: 429; RetryAfter on the *Error says how long to wait.
	ErrRateLimited = errors.New("rate limited")
	// ErrTransient: network failure, timeout, 5xx, malformed response: the
	// call may succeed if tried again (for idempotent calls).
	ErrTransient = errors.New("transient")
	// ErrPermanent: validation and other 4xx errors: fail fast.
	ErrPermanent = errors.New("permanent")
	// ErrUnsupported: the provider has no such operation.
	ErrUnsupported = errors.New("unsupported by provider")
)

// Error is a failed provider call. It never holds credentials.
type Error struct {
	Provider   string        // provider name from the config
	Op         string        // "list", "create", "set default", "delete", "list instances", ...
	Subject    string        // what the call was about, when one part of a listing failed: "region 76", "instance 65f..."
	Status     int           // HTTP status; 0 when no response arrived
	Message    string        // the provider's own message, when it sent one
	RequestID  string        // the provider's request ID, when it sent one
	RetryAfter time.Duration // from Retry-After on 429/503
	Class      error         // one of the class sentinels above
	Err        error         // underlying cause (network error, decode error), may be nil
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %s", e.Provider, e.Op)
	if e.Subject != "" {
		msg += fmt.Sprintf(" (%s)", e.Subject)
	}
	if e.Status != 0 {
		msg += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Message != "" {
		msg += fmt.Sprintf(": %s", e.Message)
	}
	if e.Err != nil {
		msg += fmt.Sprintf(": %v", e.Err)
	}
	if e.RequestID != "" {
		msg += fmt.Sprintf(" (request_id %s)", e.RequestID)
	}
	return msg
}

// Unwrap returns the class sentinel and the cause, so errors.Is works on both.
func (e *Error) Unwrap() []error {
	errs := []error{e.Class}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Retryable reports whether err is worth retrying for an idempotent call.
func Retryable(err error) bool {
	return errors.Is(err, ErrTransient) || errors.Is(err, ErrRateLimited)
}

// RetryAfter returns the provider's requested wait, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
