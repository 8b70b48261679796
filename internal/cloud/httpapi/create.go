package httpapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/rotatord/rotatord/internal/cloud"
)

// CreateOrFind runs a non-idempotent create without ever repeating it
// blindly. When create fails with a transient error (timeout, dropped
// connection, 5xx, malformed or truncated answer) the key may or may not
// exist on the provider, so find lists and looks for it: found, it is the
// result; absent, create runs again after a backoff, up to MaxAttempts
// creates in all. A 429 is not ambiguous (nothing was committed) and Do has
// already waited and retried it.
//
// find reports (key, true, nil) when the key is there. It may also clean up
// (Gcore deletes a server-generated key whose private half was lost) and
// report absent so that create runs again.
func CreateOrFind[T any](ctx context.Context, c *Client, name string,
	create func(context.Context) (T, error),
	find func(context.Context) (T, bool, error),
) (T, error) {
	var zero T
	for attempt := 1; ; attempt++ {
		v, err := create(ctx)
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil || !errors.Is(err, cloud.ErrTransient) {
			return zero, err
		}
		c.log.WarnContext(ctx, "create outcome unknown; listing to look for the key",
			"key_name", name, "attempt", attempt, "err", err)
		found, ok, ferr := find(ctx)
		if ferr != nil {
			return zero, lookupError(c, ferr)
		}
		if ok {
			c.log.InfoContext(ctx, "key found after an unknown create outcome", "key_name", name)
			return found, nil
		}
		if attempt >= c.retry.MaxAttempts {
			return zero, err
		}
		if serr := c.sleep(ctx, c.backoff(attempt, cloud.RetryAfter(err))); serr != nil {
			var ce *cloud.Error
			if errors.As(err, &ce) {
				return zero, stopped(ce, serr)
			}
			return zero, err
		}
	}
}

// lookupError reports a failed lookup as a create error that keeps the
// lookup's class, status and message, since that is what the caller must
// act on (a 401 on the list is still a 401).
func lookupError(c *Client, ferr error) error {
	const what = "list to look for the key after an unknown outcome"
	var fe *cloud.Error
	if !errors.As(ferr, &fe) {
		return c.errorf("create", cloud.ErrTransient, fmt.Errorf("%s: %w", what, ferr))
	}
	e := *fe
	e.Op = "create"
	if fe.Err != nil {
		e.Err = fmt.Errorf("%s: %w", what, fe.Err)
	} else {
		e.Err = errors.New(what)
	}
	return &e
}
