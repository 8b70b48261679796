package cloudtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/secret"
)

// refClient is a minimal client of both APIs that does what DESIGN.md asks
// of the real ones. It exists to prove the conformance suite can be passed
// (and fails where it should); the real clients live in cloud/sesterce and
// cloud/gcore.
type refClient struct {
	kind string
	base string
	key  secret.Secret
	hc   *http.Client
}

var _ cloud.Provider = (*refClient)(nil)

const refBodyLimit = 1 << 20

func newRefClient(kind string) ProviderFactory {
	return func(t *testing.T, baseURL string, apiKey secret.Secret) cloud.Provider {
		hc := &http.Client{Timeout: 300 * time.Millisecond}
		t.Cleanup(hc.CloseIdleConnections)
		return &refClient{kind: kind, base: baseURL, key: apiKey, hc: hc}
	}
}

func (c *refClient) Name() string { return c.kind + "-ref" }
func (c *refClient) Type() string { return c.kind }
func (c *refClient) Capabilities() cloud.Capabilities {
	return cloud.Capabilities{DefaultKey: c.kind == "sesterce", ServerGenerate: c.kind == "gcore"}
}

// do makes one attempt and classifies its failure.
func (c *refClient) do(ctx context.Context, op, method, path string, in, out any) error {
	fail := func(class error, status int, cause error) *cloud.Error {
		return &cloud.Error{Provider: c.Name(), Op: op, Status: status, Class: class, Err: cause}
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fail(cloud.ErrPermanent, 0, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fail(cloud.ErrPermanent, 0, err)
	}
	req.Header.Set("User-Agent", "rotatord/test")
	req.Header.Set("Content-Type", "application/json")
	if c.kind == "sesterce" {
		req.Header.Set("x-api-key", c.key.Reveal())
	} else {
		req.Header.Set("Authorization", "APIKey "+c.key.Reveal())
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fail(cloud.ErrTransient, 0, ctx.Err())
		}
		return fail(cloud.ErrTransient, 0, errors.New("request failed"))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, refBodyLimit+1))
	if err != nil {
		return fail(cloud.ErrTransient, resp.StatusCode, fmt.Errorf("read body: %w", err))
	}
	if len(raw) > refBodyLimit {
		return fail(cloud.ErrTransient, resp.StatusCode, fmt.Errorf("response body exceeds %d-byte limit", refBodyLimit))
	}
	if resp.StatusCode/100 == 2 {
		if out != nil {
			if err := json.Unmarshal(raw, out); err != nil {
				return fail(cloud.ErrTransient, resp.StatusCode, fmt.Errorf("decode body: %w", err))
			}
		}
		return nil
	}
	var eb struct {
		Message   json.RawMessage `json:"message"`
		RequestID string          `json:"request_id"`
	}
	_ = json.Unmarshal(raw, &eb)
	var msg string
	var msgs []string
	if json.Unmarshal(eb.Message, &msg) != nil && json.Unmarshal(eb.Message, &msgs) == nil {
		msg = strings.Join(msgs, "; ")
	}
	e := fail(cloud.ErrPermanent, resp.StatusCode, nil)
	e.Message, e.RequestID = msg, eb.RequestID
	switch s := resp.StatusCode; {
	case s == 401 || s == 403 || (s == 404 && c.kind == "sesterce" && msg == "API key not found"):
		e.Class = cloud.ErrUnauthorized
	case s == 404:
		e.Class = cloud.ErrNotFound
	case s == 429:
		e.Class = cloud.ErrRateLimited
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	case s >= 500:
		e.Class = cloud.ErrTransient
	}
	return e
}

// retry runs an idempotent call with a few attempts.
func retry(ctx context.Context, fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); err == nil || !cloud.Retryable(err) || ctx.Err() != nil {
			return err
		}
		wait := max(cloud.RetryAfter(err), 10*time.Millisecond)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
	return err
}

type refKey struct {
	ID1       string `json:"_id"`
	ID2       string `json:"id"`
	Name      string `json:"name"`
	Pub1      string `json:"publicKey"`
	Pub2      string `json:"public_key"`
	IsDefault bool   `json:"isDefault"`
	Created1  string `json:"createdAt"`
	Created2  string `json:"created_at"`
	ProjectID int64  `json:"project_id"`
	State     string `json:"state"`
	Private   string `json:"private_key"`
}

func (k refKey) key() cloud.Key {
	out := cloud.Key{ID: k.ID1 + k.ID2, Name: k.Name, PublicKey: k.Pub1 + k.Pub2, Default: k.IsDefault, ProjectID: k.ProjectID, State: k.State}
	out.Fingerprint, _ = cloud.Fingerprint(out.PublicKey)
	out.CreatedAt, _ = time.Parse(time.RFC3339Nano, k.Created1+k.Created2)
	return out
}

func (c *refClient) List(ctx context.Context, project int64) ([]cloud.Key, error) {
	var keys []cloud.Key
	if c.kind == "sesterce" {
		var page []refKey
		if err := retry(ctx, func() error { return c.do(ctx, "list", "GET", "/gpu-cloud/ssh-keys", nil, &page) }); err != nil {
			return nil, err
		}
		for _, k := range page {
			keys = append(keys, k.key())
		}
		return keys, nil
	}
	for {
		var page struct {
			Count   int      `json:"count"`
			Results []refKey `json:"results"`
		}
		path := fmt.Sprintf("/cloud/v1/ssh_keys/%d?%s", project, url.Values{"limit": {"100"}, "offset": {strconv.Itoa(len(keys))}}.Encode())
		if err := retry(ctx, func() error { return c.do(ctx, "list", "GET", path, nil, &page) }); err != nil {
			return nil, err
		}
		for _, k := range page.Results {
			keys = append(keys, k.key())
		}
		if len(page.Results) == 0 || len(keys) >= page.Count {
			return keys, nil
		}
	}
}

func (c *refClient) Create(ctx context.Context, project int64, req cloud.CreateRequest) (cloud.Created, error) {
	var path string
	var body any
	switch {
	case c.kind == "gcore":
		path = fmt.Sprintf("/cloud/v1/ssh_keys/%d", project)
		b := map[string]any{"name": req.Name}
		if req.PublicKey != "" {
			b["public_key"] = req.PublicKey
		}
		if req.SharedInProject != nil {
			b["shared_in_project"] = *req.SharedInProject
		}
		body = b
	case req.PublicKey == "":
		return cloud.Created{}, &cloud.Error{Provider: c.Name(), Op: "create", Class: cloud.ErrUnsupported}
	default:
		path, body = "/gpu-cloud/ssh-keys", map[string]any{"name": req.Name, "publicKey": req.PublicKey}
	}
	fp, _ := cloud.Fingerprint(req.PublicKey)
	var err error
	for range 5 {
		var k refKey
		if err = c.do(ctx, "create", "POST", path, body, &k); err == nil {
			return cloud.Created{Key: k.key(), PrivateKey: secret.Secret(k.Private)}, nil
		}
		if !cloud.Retryable(err) || ctx.Err() != nil || fp == "" {
			return cloud.Created{}, err
		}
		if errors.Is(err, cloud.ErrRateLimited) {
			// A 429 committed nothing: wait and create again.
			time.Sleep(max(cloud.RetryAfter(err), 10*time.Millisecond))
			continue
		}
		// Ambiguous: look before creating again.
		keys, lerr := c.List(ctx, project)
		if lerr != nil {
			return cloud.Created{}, errors.Join(err, lerr)
		}
		for _, k := range keys {
			if k.Name == req.Name && k.Fingerprint == fp {
				return cloud.Created{Key: k}, nil
			}
		}
		time.Sleep(max(cloud.RetryAfter(err), 10*time.Millisecond))
	}
	return cloud.Created{}, err
}

func (c *refClient) SetDefault(ctx context.Context, _ int64, id string) error {
	if c.kind != "sesterce" {
		return &cloud.Error{Provider: c.Name(), Op: "set default", Class: cloud.ErrUnsupported}
	}
	return retry(ctx, func() error {
		return c.do(ctx, "set default", "PATCH", "/gpu-cloud/ssh-keys/"+url.PathEscape(id)+"/makedefault", nil, nil)
	})
}

func (c *refClient) Delete(ctx context.Context, project int64, id string) error {
	path := "/gpu-cloud/ssh-keys/" + url.PathEscape(id)
	if c.kind == "gcore" {
		path = fmt.Sprintf("/cloud/v1/ssh_keys/%d/%s", project, url.PathEscape(id))
	}
	return retry(ctx, func() error { return c.do(ctx, "delete", "DELETE", path, nil, nil) })
}

func TestRunProviderSuite_reference(t *testing.T) {
	for _, kind := range []string{"sesterce", "gcore"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			RunProviderSuite(t, kind, newRefClient(kind))
		})
	}
}
