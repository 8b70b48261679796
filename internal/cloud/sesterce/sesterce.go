// Package sesterce is the cloud.Provider for Sesterce's GPU-cloud SSH-key
// API (/gpu-cloud/ssh-keys): list, create, make default, delete; and the
// instance listing of the inventory (ListInstances, /gpu-cloud/instances).
//
// The API has no pagination, no fingerprint (it is computed locally from
// the public key) and one quirk worth knowing: a 404 "API key not found" on
// the collection routes is an auth failure, not a missing resource.
package sesterce

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
)

// Type is the provider type in the config.
const Type = "sesterce"

// DefaultBaseURL is Sesterce's public API root.
const DefaultBaseURL = "https://api.cloud.sesterce.com"

const keysPath = "/gpu-cloud/ssh-keys"

// Config is the client's configuration; see httpapi.Config for each field
// and its default.
type Config = httpapi.Config

// Client talks to one Sesterce account. It is safe for concurrent use.
type Client struct {
	api *httpapi.Client
}

var _ cloud.Provider = (*Client)(nil)

// New returns a client for the account cfg describes.
func New(cfg Config) (*Client, error) {
	api, err := httpapi.New(cfg, DefaultBaseURL, httpapi.Spec{
		Type:       Type,
		Authorize:  func(h http.Header, key string) { h.Set("x-api-key", key) },
		ParseError: parseError,
	})
	if err != nil {
		return nil, err
	}
	return &Client{api: api}, nil
}

// Name returns the provider name from the config.
func (c *Client) Name() string { return c.api.Name() }

// Type returns "sesterce".
func (c *Client) Type() string { return Type }

// Capabilities: Sesterce has a default key; it cannot generate key pairs.
func (c *Client) Capabilities() cloud.Capabilities {
	return cloud.Capabilities{DefaultKey: true}
}

// keyDTO is Sesterce's SSHKeyDto. Real responses carry more fields (user,
// updatedAt, __v); encoding/json ignores them.
type keyDTO struct {
	ID        string `json:"_id"`
	Name      string `json:"name"`
	PublicKey string `json:"publicKey"`
	IsDefault bool   `json:"isDefault"`
	CreatedAt string `json:"createdAt"`
}

type createBody struct {
	Name      string `json:"name"`
	PublicKey string `json:"publicKey"`
}

// List returns every key of the account; project is ignored.
func (c *Client) List(ctx context.Context, _ int64) ([]cloud.Key, error) {
	var dtos []keyDTO
	err := c.api.Do(ctx, httpapi.Request{
		Op: "list", Method: http.MethodGet, Path: keysPath,
		Idempotent: true, NotFound: cloud.ErrUnauthorized,
	}, &dtos)
	if err != nil {
		return nil, err
	}
	keys := make([]cloud.Key, 0, len(dtos))
	for _, d := range dtos {
		keys = append(keys, c.key(ctx, d))
	}
	return keys, nil
}

// Create uploads req.PublicKey under req.Name. Sesterce cannot generate
// keys, so an empty public key is an error wrapping cloud.ErrUnsupported.
// After an ambiguous failure the key is looked up by name and fingerprint
// before it is created again (see httpapi.CreateOrFind).
func (c *Client) Create(ctx context.Context, _ int64, req cloud.CreateRequest) (cloud.Created, error) {
	if strings.TrimSpace(req.PublicKey) == "" {
		return cloud.Created{}, &cloud.Error{
			Provider: c.Name(), Op: "create", Class: cloud.ErrUnsupported,
			Message: "sesterce cannot generate key pairs: a public key is required",
		}
	}
	if req.Name == "" {
		return cloud.Created{}, &cloud.Error{Provider: c.Name(), Op: "create", Class: cloud.ErrPermanent, Message: "key name is empty"}
	}
	fp, err := cloud.Fingerprint(req.PublicKey)
	if err != nil {
		return cloud.Created{}, &cloud.Error{Provider: c.Name(), Op: "create", Class: cloud.ErrPermanent, Err: err}
	}
	create := func(ctx context.Context) (cloud.Created, error) {
		var d keyDTO
		err := c.api.Do(ctx, httpapi.Request{
			Op: "create", Method: http.MethodPost, Path: keysPath,
			Body:     createBody{Name: req.Name, PublicKey: req.PublicKey},
			NotFound: cloud.ErrUnauthorized,
		}, &d)
		if err != nil {
			return cloud.Created{}, err
		}
		if d.ID == "" {
			// A 2xx without the key is as ambiguous as no answer.
			return cloud.Created{}, &cloud.Error{
				Provider: c.Name(), Op: "create", Class: cloud.ErrTransient,
				Err: errors.New("decode response: created key has no _id"),
			}
		}
		return cloud.Created{Key: c.key(ctx, d)}, nil
	}
	find := func(ctx context.Context) (cloud.Created, bool, error) {
		keys, err := c.List(ctx, 0)
		if err != nil {
			return cloud.Created{}, false, err
		}
		for _, k := range keys {
			if k.Name == req.Name && k.Fingerprint == fp {
				return cloud.Created{Key: k}, true, nil
			}
		}
		return cloud.Created{}, false, nil
	}
	return httpapi.CreateOrFind(ctx, c.api, req.Name, create, find)
}

// SetDefault makes id the account's default key (PATCH .../makedefault).
// A 404 means the key is gone: an error wrapping cloud.ErrNotFound.
func (c *Client) SetDefault(ctx context.Context, _ int64, id string) error {
	if id == "" {
		return &cloud.Error{Provider: c.Name(), Op: "set default", Class: cloud.ErrPermanent, Message: "key id is empty"}
	}
	return c.api.Do(ctx, httpapi.Request{
		Op: "set default", Method: http.MethodPatch,
		Path:       keysPath + "/" + url.PathEscape(id) + "/makedefault",
		Idempotent: true,
	}, nil)
}

// Delete removes id. Any 2xx is success; a 404 is an error wrapping
// cloud.ErrNotFound, which callers treat as already gone.
func (c *Client) Delete(ctx context.Context, _ int64, id string) error {
	if id == "" {
		return &cloud.Error{Provider: c.Name(), Op: "delete", Class: cloud.ErrPermanent, Message: "key id is empty"}
	}
	return c.api.Do(ctx, httpapi.Request{
		Op: "delete", Method: http.MethodDelete,
		Path:       keysPath + "/" + url.PathEscape(id),
		Idempotent: true,
	}, nil)
}

func (c *Client) key(ctx context.Context, d keyDTO) cloud.Key {
	k := cloud.Key{ID: d.ID, Name: d.Name, PublicKey: d.PublicKey, Default: d.IsDefault}
	// A key the provider holds in a form we cannot parse is still listed
	// (the report shows it); it simply has no fingerprint.
	k.Fingerprint, _ = cloud.Fingerprint(d.PublicKey)
	k.CreatedAt = c.api.Time(ctx, d.CreatedAt, "key createdAt", "key_id", d.ID)
	return k
}

// errorBody is Sesterce's (NestJS) error shape. message is a string, or a
// list of strings for validation errors.
type errorBody struct {
	Message json.RawMessage `json:"message"`
	Error   string          `json:"error"`
}

func parseError(body []byte) (string, string) {
	var b errorBody
	if err := json.Unmarshal(body, &b); err != nil {
		return httpapi.Snippet(body), ""
	}
	var s string
	if json.Unmarshal(b.Message, &s) == nil && s != "" {
		return s, ""
	}
	var list []string
	if json.Unmarshal(b.Message, &list) == nil && len(list) > 0 {
		return strings.Join(list, "; "), ""
	}
	return b.Error, ""
}
