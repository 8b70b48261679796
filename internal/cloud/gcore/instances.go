package gcore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
)

// listConcurrency bounds the region listings (instances and bare metal)
// in flight at once; the client's rate limit bounds them further.
const listConcurrency = 4

// maxPages bounds the pages read from one listing: a server whose count is
// never reached while every page brings new IDs would otherwise page on
// for ever. 200 pages of 1,000 is far beyond any account.
const maxPages = 200

var _ interface {
	ListInstances(ctx context.Context, project int64, regions []int64) ([]cloud.Instance, error)
} = (*Client)(nil)

// regionDTO is a region of GET /cloud/v1/regions.
type regionDTO struct {
	ID          httpapi.LooseInt `json:"id"`
	DisplayName string           `json:"display_name"`
	State       string           `json:"state"`
}

// instanceDTO is an instance or bare-metal server. Gcore renamed fields in
// 2025 (reference/instances.md §4.2) and it is unknown which names the
// live API sends, so both generations are read.
type instanceDTO struct {
	ID              string                  `json:"id"`
	InstanceID      string                  `json:"instance_id"`
	Name            string                  `json:"name"`
	InstanceName    string                  `json:"instance_name"`
	CreatedAt       string                  `json:"created_at"`
	InstanceCreated string                  `json:"instance_created"`
	SSHKeyName      *string                 `json:"ssh_key_name"`
	KeypairName     *string                 `json:"keypair_name"`
	Status          string                  `json:"status"`
	VMState         string                  `json:"vm_state"`
	Region          string                  `json:"region"`
	RegionID        httpapi.LooseInt        `json:"region_id"`
	ProjectID       httpapi.LooseInt        `json:"project_id"`
	Addresses       map[string][]addressDTO `json:"addresses"`
	FixedIPs        []fixedIPDTO            `json:"fixed_ip_assignments"`
}

type addressDTO struct {
	Addr string `json:"addr"`
	Type string `json:"type"`
}

type fixedIPDTO struct {
	External  bool   `json:"external"`
	IPAddress string `json:"ip_address"`
}

// rawPage is a page whose results are decoded one by one, so one
// undecodable instance costs that instance, not the page.
type rawPage struct {
	Count   int               `json:"count"`
	Results []json.RawMessage `json:"results"`
}

// listing is one paged collection of one region: its instances or its
// bare-metal servers.
type listing struct {
	region     int64
	regionName string // from the region list; "" when regions were given
	kind       string
	path       string
}

func (l listing) subject() string {
	if l.regionName != "" {
		return fmt.Sprintf("region %d %s", l.region, l.regionName)
	}
	return fmt.Sprintf("region %d", l.region)
}

// ListInstances returns the project's instances and bare-metal servers in
// regions, or, when regions is empty, in every region the provider lists
// as ACTIVE. Each region's two collections are paged with limit/offset
// until count; up to listConcurrency of them are read at once.
//
// A region that cannot be listed does not hide the others: the instances
// of the regions that answered are returned together with an error that
// names each failed region (see cloud.Instance for the contract). Only a
// failure to list the regions themselves, or a bad project, returns no
// instances.
func (c *Client) ListInstances(ctx context.Context, project int64, regions []int64) ([]cloud.Instance, error) {
	if err := c.checkProject("list instances", project); err != nil {
		return nil, err
	}
	names := map[int64]string{}
	if len(regions) == 0 {
		active, err := c.activeRegions(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range active {
			regions = append(regions, int64(r.ID))
			names[int64(r.ID)] = r.DisplayName
		}
	}
	var jobs []listing
	seen := map[int64]bool{}
	for _, r := range regions {
		if seen[r] {
			continue
		}
		seen[r] = true
		p, rs := strconv.FormatInt(project, 10), strconv.FormatInt(r, 10)
		jobs = append(jobs,
			listing{region: r, regionName: names[r], kind: cloud.KindInstance, path: "/cloud/v1/instances/" + p + "/" + rs},
			listing{region: r, regionName: names[r], kind: cloud.KindBareMetal, path: "/cloud/v1/bminstances/" + p + "/" + rs})
	}
	results := make([][]cloud.Instance, len(jobs))
	errs := make([]error, len(jobs))
	httpapi.ForEach(ctx, len(jobs), listConcurrency, func(ctx context.Context, i int) {
		results[i], errs[i] = c.listRegion(ctx, project, jobs[i])
	})
	var out []cloud.Instance
	for _, r := range results {
		out = append(out, r...)
	}
	return out, errors.Join(errs...)
}

// activeRegions reads every page of the region list and keeps the regions
// in state ACTIVE.
func (c *Client) activeRegions(ctx context.Context) ([]regionDTO, error) {
	var active []regionDTO
	for offset, pages := 0, 0; ; pages++ {
		var p struct {
			Count   int         `json:"count"`
			Results []regionDTO `json:"results"`
		}
		err := c.api.Do(ctx, httpapi.Request{
			Op: "list regions", Method: http.MethodGet, Path: "/cloud/v1/regions",
			Query:      url.Values{"limit": {strconv.Itoa(c.pageSize)}, "offset": {strconv.Itoa(offset)}},
			Idempotent: true, NotFound: cloud.ErrPermanent,
		}, &p)
		if err != nil {
			return nil, err
		}
		for _, r := range p.Results {
			if strings.EqualFold(r.State, "ACTIVE") && r.ID > 0 {
				active = append(active, r)
			}
		}
		offset += len(p.Results)
		if len(p.Results) == 0 || offset >= p.Count || pages >= maxPages {
			return active, nil
		}
	}
}

// listRegion pages through one collection. On an error it returns what it
// read before it, so the caller can still report those instances.
func (c *Client) listRegion(ctx context.Context, project int64, l listing) ([]cloud.Instance, error) {
	var out []cloud.Instance
	var decodeErrs []error
	seen := map[string]bool{}
	for offset, pages := 0, 1; ; pages++ {
		var p *rawPage
		err := c.api.Do(ctx, httpapi.Request{
			Op: "list instances", Method: http.MethodGet, Path: l.path,
			Query:      url.Values{"limit": {strconv.Itoa(c.pageSize)}, "offset": {strconv.Itoa(offset)}},
			Idempotent: true, NotFound: cloud.ErrPermanent, Subject: l.subject(),
		}, &p)
		if err == nil && p == nil {
			err = &cloud.Error{Provider: c.Name(), Op: "list instances", Subject: l.subject(), Status: http.StatusOK,
				Class: cloud.ErrTransient, Err: errors.New("decode response: null instead of a page")}
		}
		if err != nil {
			return out, errors.Join(append(decodeErrs, err)...)
		}
		fresh := 0
		for i, raw := range p.Results {
			var d instanceDTO
			if err := json.Unmarshal(raw, &d); err != nil {
				decodeErrs = append(decodeErrs, &cloud.Error{
					Provider: c.Name(), Op: "list instances", Subject: l.subject(), Status: http.StatusOK,
					Class: cloud.ErrTransient, Err: fmt.Errorf("decode %s %d of the page at offset %d: %w", l.kind, i, offset, err),
				})
				continue
			}
			inst := c.instance(ctx, d, project, l)
			// An instance created or deleted between two pages shifts the
			// next page; dedup keeps every instance once. One without an
			// ID is known by its whole body.
			key := inst.ID
			if key == "" {
				key = "body:" + string(raw)
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			fresh++
			if !deleted(d) {
				out = append(out, inst)
			}
		}
		offset += len(p.Results)
		if fresh == 0 || offset >= p.Count {
			return out, errors.Join(decodeErrs...)
		}
		if pages >= maxPages {
			return out, errors.Join(append(decodeErrs, &cloud.Error{
				Provider: c.Name(), Op: "list instances", Subject: l.subject(), Class: cloud.ErrTransient,
				Err: fmt.Errorf("stopped after %d pages (%d instances): count %d never reached", pages, offset, p.Count),
			})...)
		}
	}
}

// deleted reports a machine the provider says is gone; it no longer holds
// any key.
func deleted(d instanceDTO) bool {
	return strings.EqualFold(d.Status, "DELETED") || strings.EqualFold(d.VMState, "deleted")
}

func (c *Client) instance(ctx context.Context, d instanceDTO, project int64, l listing) cloud.Instance {
	inst := cloud.Instance{
		ID:        cmp.Or(d.ID, d.InstanceID),
		Name:      cmp.Or(d.Name, d.InstanceName),
		Status:    d.Status,
		Region:    cmp.Or(d.Region, l.regionName),
		RegionID:  cmp.Or(int64(d.RegionID), l.region),
		ProjectID: cmp.Or(int64(d.ProjectID), project),
		Address:   pickAddress(d.Addresses, d.FixedIPs),
		Kind:      l.kind,
	}
	switch {
	case d.SSHKeyName != nil && *d.SSHKeyName != "":
		inst.KeyName = *d.SSHKeyName
	case d.KeypairName != nil:
		inst.KeyName = *d.KeypairName
	}
	inst.CreatedAt = c.api.Time(ctx, cmp.Or(d.CreatedAt, d.InstanceCreated), "instance created_at", "instance_id", inst.ID)
	return inst
}

// pickAddress chooses the address to report: a floating IPv4, else a fixed
// IPv4 that fixed_ip_assignments marks external, else the first fixed
// IPv4; then IPv6 in the same order. Gcore sends no IP version, so each
// addr is parsed. Networks are read in name order (the addresses object is
// a map), so the choice does not change between runs. An instance with no
// addresses but with fixed_ip_assignments is read from those.
func pickAddress(addrs map[string][]addressDTO, fixed []fixedIPDTO) string {
	external := map[netip.Addr]bool{}
	for _, f := range fixed {
		if a, err := netip.ParseAddr(f.IPAddress); err == nil && f.External {
			external[a.Unmap()] = true
		}
	}
	type candidate struct {
		addr netip.Addr
		rank int // lower is better
	}
	var best *candidate
	consider := func(raw, typ string) {
		a, err := netip.ParseAddr(strings.TrimSpace(raw))
		if err != nil {
			return
		}
		a = a.Unmap()
		rank := 2 // fixed, internal or unmarked
		switch {
		case strings.EqualFold(typ, "floating"):
			rank = 0
		case external[a]:
			rank = 1
		}
		if !a.Is4() {
			rank += 3
		}
		if best == nil || rank < best.rank {
			best = &candidate{a, rank}
		}
	}
	networks := make([]string, 0, len(addrs))
	for n := range addrs {
		networks = append(networks, n)
	}
	slices.Sort(networks)
	for _, n := range networks {
		for _, a := range addrs[n] {
			consider(a.Addr, a.Type)
		}
	}
	if best == nil {
		for _, f := range fixed {
			consider(f.IPAddress, "fixed")
		}
	}
	if best == nil {
		return ""
	}
	return best.addr.String()
}
