package sesterce

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
)

const instancesPath = "/gpu-cloud/instances"

// detailConcurrency bounds the detail calls in flight at once; the
// client's rate limit bounds them further.
const detailConcurrency = 8

var _ interface {
	ListInstances(ctx context.Context, project int64, regions []int64) ([]cloud.Instance, error)
} = (*Client)(nil)

// instanceDTO is GpuCloudInstance (the list item) and, with SSHKey,
// GpuCloudInstanceDetails. Fields whose shape the sources do not pin down
// (region, sshKey, sshPort) are read loosely; see reference/instances.md §2.
type instanceDTO struct {
	ID        string           `json:"_id"`
	AltID     string           `json:"id"`
	Name      string           `json:"name"`
	Status    string           `json:"status"`
	Region    json.RawMessage  `json:"region"` // {name, countryCode}, or a name
	IP        *string          `json:"ip"`
	SSHUser   *string          `json:"sshUser"`
	SSHPort   httpapi.LooseInt `json:"sshPort"`
	CreatedAt string           `json:"createdAt"`
	DeletedAt *string          `json:"deletedAt"`
	SSHKey    json.RawMessage  `json:"sshKey"` // {_id, name, publicKey}, an id, or null
}

func (d instanceDTO) id() string { return cmp.Or(d.ID, d.AltID) }

// deleted reports an instance the provider says is gone. Whether the list
// shows such instances is not documented (reference/instances.md §4.7).
func (d instanceDTO) deleted() bool {
	return strings.EqualFold(d.Status, "deleted") || (d.DeletedAt != nil && *d.DeletedAt != "")
}

type sshKeyDTO struct {
	ID        string `json:"_id"`
	AltID     string `json:"id"`
	Name      string `json:"name"`
	PublicKey string `json:"publicKey"`
}

// ListInstances returns the account's instances; project and regions are
// ignored (Sesterce has neither). The list (GET /gpu-cloud/instances: a
// bare array, or one wrapped as {instances: [...]} or {data: [...]}) names
// no key, so each active instance is then read on its own (GET
// /gpu-cloud/instances/{id}, up to detailConcurrency at once) for its
// sshKey, ip, sshUser and sshPort. Instances the provider reports deleted
// are left out; those not active are returned without a key.
//
// A detail call that fails does not hide the others: that instance is
// returned as the list showed it (without its key) and the error names it
// (see cloud.Instance for the contract). An instance gone between the list
// and its detail call (404) is left out without an error.
func (c *Client) ListInstances(ctx context.Context, _ int64, _ []int64) ([]cloud.Instance, error) {
	var raw json.RawMessage
	err := c.api.Do(ctx, httpapi.Request{
		Op: "list instances", Method: http.MethodGet, Path: instancesPath,
		Idempotent: true, NotFound: cloud.ErrUnauthorized,
	}, &raw)
	if err != nil {
		return nil, err
	}
	items, err := unwrapList(raw)
	if err != nil {
		return nil, &cloud.Error{Provider: c.Name(), Op: "list instances", Status: http.StatusOK, Class: cloud.ErrTransient,
			Err: fmt.Errorf("decode response: %w", err)}
	}
	var errs []error
	var dtos []instanceDTO
	for i, item := range items {
		var d instanceDTO
		if err := json.Unmarshal(item, &d); err != nil {
			errs = append(errs, &cloud.Error{Provider: c.Name(), Op: "list instances", Status: http.StatusOK, Class: cloud.ErrTransient,
				Err: fmt.Errorf("decode instance %d of the list: %w", i, err)})
			continue
		}
		if !d.deleted() {
			dtos = append(dtos, d)
		}
	}

	gone := make([]bool, len(dtos))
	detailErrs := make([]error, len(dtos))
	httpapi.ForEach(ctx, len(dtos), detailConcurrency, func(ctx context.Context, i int) {
		if !strings.EqualFold(dtos[i].Status, "active") || dtos[i].id() == "" {
			return
		}
		d, err := c.detail(ctx, dtos[i].id())
		switch {
		case errors.Is(err, cloud.ErrNotFound):
			gone[i] = true
		case err != nil:
			detailErrs[i] = err
		default:
			dtos[i] = merge(dtos[i], d)
		}
	})
	out := make([]cloud.Instance, 0, len(dtos))
	for i, d := range dtos {
		if gone[i] || d.deleted() {
			continue
		}
		out = append(out, c.instance(ctx, d))
	}
	return out, errors.Join(append(errs, detailErrs...)...)
}

// detail reads one instance.
func (c *Client) detail(ctx context.Context, id string) (instanceDTO, error) {
	var raw json.RawMessage
	err := c.api.Do(ctx, httpapi.Request{
		Op: "get instance", Method: http.MethodGet, Path: instancesPath + "/" + url.PathEscape(id),
		Idempotent: true, Subject: "instance " + id,
	}, &raw)
	if err != nil {
		return instanceDTO{}, err
	}
	var d instanceDTO
	if err := json.Unmarshal(unwrapObject(raw), &d); err != nil {
		return instanceDTO{}, &cloud.Error{Provider: c.Name(), Op: "get instance", Subject: "instance " + id,
			Status: http.StatusOK, Class: cloud.ErrTransient, Err: fmt.Errorf("decode response: %w", err)}
	}
	return d, nil
}

// unwrapList returns the items of a bare array or of one wrapped as
// {instances: [...]} or {data: [...]}.
func unwrapList(raw json.RawMessage) ([]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	var items []json.RawMessage
	if len(raw) > 0 && raw[0] == '{' {
		var w struct {
			Instances []json.RawMessage `json:"instances"`
			Data      []json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(raw, &w); err != nil {
			return nil, err
		}
		if w.Instances == nil && w.Data == nil {
			return nil, errors.New("an object with neither instances nor data")
		}
		return append(w.Instances, w.Data...), nil
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, err
	}
	return items, nil
}

// unwrapObject returns the instance of a detail answer, which may come
// wrapped as {data: {...}} or {instance: {...}} like the list.
func unwrapObject(raw json.RawMessage) json.RawMessage {
	var w struct {
		ID       string          `json:"_id"`
		AltID    string          `json:"id"`
		Data     json.RawMessage `json:"data"`
		Instance json.RawMessage `json:"instance"`
	}
	if json.Unmarshal(raw, &w) != nil || w.ID != "" || w.AltID != "" {
		return raw
	}
	for _, inner := range []json.RawMessage{w.Instance, w.Data} {
		if t := bytes.TrimSpace(inner); len(t) > 0 && t[0] == '{' {
			return inner
		}
	}
	return raw
}

// merge lays the detail over the list item: the detail wins where it
// says something.
func merge(list, detail instanceDTO) instanceDTO {
	out := list
	out.SSHKey = detail.SSHKey
	if detail.Name != "" {
		out.Name = detail.Name
	}
	if detail.Status != "" {
		out.Status = detail.Status
	}
	if len(detail.Region) > 0 && string(detail.Region) != "null" {
		out.Region = detail.Region
	}
	if detail.IP != nil {
		out.IP = detail.IP
	}
	if detail.SSHUser != nil {
		out.SSHUser = detail.SSHUser
	}
	if detail.SSHPort != 0 {
		out.SSHPort = detail.SSHPort
	}
	if detail.CreatedAt != "" {
		out.CreatedAt = detail.CreatedAt
	}
	if detail.DeletedAt != nil {
		out.DeletedAt = detail.DeletedAt
	}
	return out
}

func (c *Client) instance(ctx context.Context, d instanceDTO) cloud.Instance {
	inst := cloud.Instance{
		ID:     d.id(),
		Name:   d.Name,
		Status: d.Status,
		Region: regionName(d.Region),
		Port:   int(d.SSHPort),
		Kind:   cloud.KindInstance,
	}
	if d.IP != nil {
		inst.Address = strings.TrimSpace(*d.IP)
	}
	if d.SSHUser != nil {
		inst.User = *d.SSHUser
	}
	var key sshKeyDTO
	var keyID string
	switch t := bytes.TrimSpace(d.SSHKey); {
	case len(t) > 0 && t[0] == '{':
		if err := json.Unmarshal(t, &key); err != nil {
			c.api.Logger().WarnContext(ctx, "instance has an unreadable sshKey", "instance_id", inst.ID, "err", err)
		}
	case len(t) > 0 && t[0] == '"':
		_ = json.Unmarshal(t, &keyID)
	}
	inst.KeyID = cmp.Or(cmp.Or(key.ID, key.AltID), keyID)
	inst.KeyName = key.Name
	inst.KeyFingerprint, _ = cloud.Fingerprint(key.PublicKey)
	inst.CreatedAt = c.api.Time(ctx, d.CreatedAt, "instance createdAt", "instance_id", inst.ID)
	return inst
}

// regionName reads region as {name, countryCode} or as a plain name.
func regionName(raw json.RawMessage) string {
	var r struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &r) == nil && r.Name != "" {
		return r.Name
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}
