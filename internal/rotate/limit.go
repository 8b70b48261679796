package rotate

import (
	"context"

	"github.com/rotatord/rotatord/internal/cloud"
)

// limited bounds the requests in flight to one provider account. The bound
// is on requests, not on whole rotations: while one rotation waits for
// Vault or the journal, another can use the provider, so the provider's
// share of the work stays busy and a run of many policies costs about
// (provider calls x latency / concurrency).
type limited struct {
	cloud.Provider
	sem chan struct{}
}

func limit(p cloud.Provider, n int) *limited {
	return &limited{Provider: p, sem: make(chan struct{}, n)}
}

func (l *limited) acquire(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *limited) release() { <-l.sem }

func (l *limited) List(ctx context.Context, project int64) ([]cloud.Key, error) {
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	defer l.release()
	return l.Provider.List(ctx, project)
}

func (l *limited) Create(ctx context.Context, project int64, req cloud.CreateRequest) (cloud.Created, error) {
	if err := l.acquire(ctx); err != nil {
		return cloud.Created{}, err
	}
	defer l.release()
	return l.Provider.Create(ctx, project, req)
}

func (l *limited) SetDefault(ctx context.Context, project int64, id string) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Provider.SetDefault(ctx, project, id)
}

func (l *limited) Delete(ctx context.Context, project int64, id string) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Provider.Delete(ctx, project, id)
}
