package cloudtest

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Instance kinds, as cloud.KindInstance and cloud.KindBareMetal.
const (
	KindInstance  = "instance"
	KindBareMetal = "baremetal"
)

// Gcore region paging: the region list's limit defaults to 100
// (reference/instances.md §1); instances page like keys.
const gcoreRegionDefaultLimit = 100

// GcoreRegion is a region of the Gcore fake. Regions are global (not per
// project), as on Gcore.
type GcoreRegion struct {
	ID    int64  `json:"id"`
	Name  string `json:"display_name"`
	State string `json:"state"` // ACTIVE, INACTIVE, MAINTENANCE, ...
}

// GcoreAddress is one entry of a Gcore instance's addresses.
type GcoreAddress struct {
	// Network is the key of the addresses object the entry is listed under.
	Network string `json:"network"`
	Addr    string `json:"addr"`
	// Type is "floating" or "fixed".
	Type string `json:"type"`
	// External marks a fixed address as public in fixed_ip_assignments.
	External bool `json:"external,omitempty"`
}

// GcoreInstance is an instance or bare-metal server of the Gcore fake.
type GcoreInstance struct {
	ID        string `json:"id"`
	ProjectID int64  `json:"project_id"`
	RegionID  int64  `json:"region_id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Kind      string `json:"kind"` // KindInstance or KindBareMetal
	// KeyName is ssh_key_name: Gcore instances name their key, by name
	// only. "" is served as null.
	KeyName   string         `json:"key_name"`
	Addresses []GcoreAddress `json:"addresses"`
	CreatedAt time.Time      `json:"created_at"`
	// OldFields serves the instance with the field names Gcore used before
	// 2025 (instance_id, instance_name, instance_created, keypair_name).
	OldFields bool `json:"old_fields,omitempty"`
}

// SesterceInstance is an instance of the Sesterce fake.
type SesterceInstance struct {
	// Account is the Sesterce account the instance runs in: the account
	// of its launch key (0 when the fake does not hold that key).
	Account int    `json:"account"`
	ID      string `json:"id"`
	Name    string `json:"name"`
	Status  string `json:"status"` // pending, active, error, deleted
	Region  string `json:"region"`
	// KeyID is the sshKeyId the instance was launched with. The detail
	// call shows the key as it was at launch (KeyName, KeyPublicKey): the
	// fake assumes sshKey survives deletion of the key, the case that
	// matters, since a deleted key is the one an inventory must find.
	KeyID        string     `json:"key_id"`
	KeyName      string     `json:"key_name"`
	KeyPublicKey string     `json:"key_public_key"`
	IP           string     `json:"ip"`
	User         string     `json:"user"`
	Port         int        `json:"port"`
	CreatedAt    time.Time  `json:"created_at"`
	DeletedAt    *time.Time `json:"deleted_at,omitempty"`
}

// InstanceOption adjusts an instance that LaunchGcoreInstance or
// LaunchSesterceInstance creates.
type InstanceOption func(*instanceSpec)

type instanceSpec struct {
	status       string
	bareMetal    bool
	oldFields    bool
	addresses    []GcoreAddress
	addressesSet bool
	ip, user     string
	port         int
	sshSet       bool
	region       string
	createdAt    time.Time
}

// WithStatus sets the provider status (Gcore default ACTIVE, Sesterce
// default active).
func WithStatus(status string) InstanceOption { return func(s *instanceSpec) { s.status = status } }

// BareMetal makes a Gcore instance a bare-metal server, listed under
// /cloud/v1/bminstances.
func BareMetal() InstanceOption { return func(s *instanceSpec) { s.bareMetal = true } }

// OldFieldNames serves a Gcore instance with the pre-2025 field names.
// Options.GcoreOldInstanceFields does it for every instance.
func OldFieldNames() InstanceOption { return func(s *instanceSpec) { s.oldFields = true } }

// WithAddresses replaces a Gcore instance's generated addresses (a fixed
// IPv6, a fixed private IPv4 and a floating public IPv4); none gives an
// instance without addresses.
func WithAddresses(addrs ...GcoreAddress) InstanceOption {
	return func(s *instanceSpec) { s.addresses, s.addressesSet = slices.Clone(addrs), true }
}

// WithSSH sets a Sesterce instance's ip, sshUser and sshPort (generated
// by default: an address, "ubuntu", 22); "" and 0 are served as null.
func WithSSH(ip, user string, port int) InstanceOption {
	return func(s *instanceSpec) { s.ip, s.user, s.port, s.sshSet = ip, user, port, true }
}

// InRegion names a Sesterce instance's region (default "FR-PAR-1"), or a
// Gcore region that does not exist yet (default "Region <id>").
func InRegion(name string) InstanceOption { return func(s *instanceSpec) { s.region = name } }

// CreatedAt sets the creation time (default: the server's clock).
func CreatedAt(t time.Time) InstanceOption { return func(s *instanceSpec) { s.createdAt = t } }

func (s *Server) spec(opts []InstanceOption) instanceSpec {
	var sp instanceSpec
	for _, o := range opts {
		o(&sp)
	}
	if sp.createdAt.IsZero() {
		sp.createdAt = s.now()
	}
	return sp
}

// AddGcoreRegion adds region id (or updates its name and state) and
// returns it.
func (s *Server) AddGcoreRegion(id int64, name, state string) GcoreRegion {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addGcoreRegionLocked(id, name, state)
}

func (s *Server) addGcoreRegionLocked(id int64, name, state string) GcoreRegion {
	r := GcoreRegion{ID: id, Name: name, State: state}
	if i := slices.IndexFunc(s.regions, func(x GcoreRegion) bool { return x.ID == id }); i >= 0 {
		s.regions[i] = r
		return r
	}
	s.regions = append(s.regions, r)
	return r
}

// GcoreRegions returns the regions in the order they were added.
func (s *Server) GcoreRegions() []GcoreRegion {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.regions)
}

// LaunchGcoreInstance creates an instance in project and region,
// provisioned with the key named keyName ("" for none), and returns it. A
// region the fake does not have is added, ACTIVE. The key name is not
// checked: Gcore instances refer to keys by name, and a key deleted since
// is exactly what an inventory must still show.
func (s *Server) LaunchGcoreInstance(project, region int64, name, keyName string, opts ...InstanceOption) GcoreInstance {
	sp := s.spec(opts)
	inst := GcoreInstance{
		ID: newUUID(), ProjectID: project, RegionID: region, Name: name,
		Status: cmpOr(sp.status, "ACTIVE"), Kind: KindInstance, KeyName: keyName,
		CreatedAt: sp.createdAt.UTC().Truncate(time.Second), OldFields: sp.oldFields,
	}
	if sp.bareMetal {
		inst.Kind = KindBareMetal
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.ContainsFunc(s.regions, func(r GcoreRegion) bool { return r.ID == region }) {
		s.addGcoreRegionLocked(region, cmpOr(sp.region, fmt.Sprintf("Region %d", region)), "ACTIVE")
	}
	if sp.addressesSet {
		inst.Addresses = sp.addresses
	} else {
		n := s.nextAddrLocked()
		inst.Addresses = []GcoreAddress{
			{Network: "net1", Addr: fmt.Sprintf("fd00::%x", n), Type: "fixed"},
			{Network: "net1", Addr: netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}).String(), Type: "fixed"},
			{Network: "net1", Addr: netip.AddrFrom4([4]byte{198, 18 + byte(n>>16&1), byte(n >> 8), byte(n)}).String(), Type: "floating"},
		}
	}
	s.gcoreInstances = append(s.gcoreInstances, inst)
	return inst
}

// LaunchSesterceInstance creates an instance launched with sshKeyId keyID
// and returns it. A key the fake holds is recorded as it is now (name and
// public key), so the detail call still shows it after the key is deleted;
// an unknown keyID is served with the ID alone.
func (s *Server) LaunchSesterceInstance(name, keyID string, opts ...InstanceOption) SesterceInstance {
	sp := s.spec(opts)
	inst := SesterceInstance{
		ID: newHexID(), Name: name, Status: cmpOr(sp.status, "active"), Region: cmpOr(sp.region, "FR-PAR-1"),
		KeyID: keyID, CreatedAt: sp.createdAt.UTC().Truncate(time.Millisecond),
		IP: sp.ip, User: sp.user, Port: sp.port,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.IndexFunc(s.sesterce, func(k SesterceKey) bool { return k.ID == keyID }); i >= 0 {
		inst.Account, inst.KeyName, inst.KeyPublicKey = s.sesterce[i].Account, s.sesterce[i].Name, s.sesterce[i].PublicKey
	}
	if !sp.sshSet {
		n := s.nextAddrLocked()
		inst.IP = netip.AddrFrom4([4]byte{198, 19, byte(n >> 8), byte(n)}).String()
		inst.User, inst.Port = "ubuntu", 22
	}
	s.sesterceInstances = append(s.sesterceInstances, inst)
	return inst
}

// nextAddrLocked numbers generated addresses; s.mu is held.
func (s *Server) nextAddrLocked() uint32 {
	s.addrSeq++
	return s.addrSeq
}

// TerminateInstance ends instance id of either provider and reports
// whether it existed. A Gcore instance disappears; a Sesterce one stays
// listed with status "deleted" and a deletedAt, which clients must skip
// (whether the real API lists them is unknown, so the fake takes the case
// that asks more of a client).
func (s *Server) TerminateInstance(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.IndexFunc(s.gcoreInstances, func(x GcoreInstance) bool { return x.ID == id }); i >= 0 {
		s.gcoreInstances = slices.Delete(s.gcoreInstances, i, i+1)
		return true
	}
	i := slices.IndexFunc(s.sesterceInstances, func(x SesterceInstance) bool { return x.ID == id })
	if i < 0 || s.sesterceInstances[i].DeletedAt != nil {
		return false
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	s.sesterceInstances[i].Status, s.sesterceInstances[i].DeletedAt = "deleted", &now
	return true
}

// GcoreInstances returns the instances and bare-metal servers of project
// (every project when 0), in launch order.
func (s *Server) GcoreInstances(project int64) []GcoreInstance {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []GcoreInstance
	for _, inst := range s.gcoreInstances {
		if project == 0 || inst.ProjectID == project {
			out = append(out, inst)
		}
	}
	return out
}

// SesterceInstances returns the Sesterce instances, terminated ones
// included, in launch order.
func (s *Server) SesterceInstances() []SesterceInstance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sesterceInstances)
}

// gcorePaging reads limit (1..gcoreMaxLimit, defaultLimit when absent) and
// offset, answering a bad value itself.
func gcorePaging(w http.ResponseWriter, r *http.Request, defaultLimit int) (limit, offset int, ok bool) {
	q := r.URL.Query()
	limit = defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > gcoreMaxLimit {
			gcoreError(w, http.StatusBadRequest, fmt.Sprintf("limit: Ensure this value is between 1 and %d.", gcoreMaxLimit))
			return 0, 0, false
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			gcoreError(w, http.StatusBadRequest, "offset: Ensure this value is greater than or equal to 0.")
			return 0, 0, false
		}
		offset = n
	}
	return limit, offset, true
}

// writeGcorePage answers one page of items as {count, results}.
func writeGcorePage[T any](w http.ResponseWriter, items []T, limit, offset int, dto func(T) any) {
	page := items[min(offset, len(items)):min(offset+limit, len(items))]
	results := make([]any, 0, len(page))
	for _, it := range page {
		results = append(results, dto(it))
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(items), "results": results})
}

func (s *Server) gcoreRegionList(w http.ResponseWriter, r *http.Request) {
	if !s.gcoreAuth(w, r) {
		return
	}
	limit, offset, ok := gcorePaging(w, r, gcoreRegionDefaultLimit)
	if !ok {
		return
	}
	writeGcorePage(w, s.GcoreRegions(), limit, offset, func(rg GcoreRegion) any {
		return map[string]any{
			"id": rg.ID, "display_name": rg.Name, "state": rg.State,
			// A few of the fields real regions carry, unknown to clients.
			"country": "LU", "endpoint_type": "public", "access_level": "core",
			"available_volume_types": []string{"standard", "ssd_hiiops"},
		}
	})
}

// gcoreInstanceList serves both /instances and /bminstances.
func (s *Server) gcoreInstanceList(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		project, ok := s.gcoreProject(w, r)
		if !ok {
			return
		}
		region, err := strconv.ParseInt(r.PathValue("region_id"), 10, 64)
		if err != nil || region < 1 {
			gcoreError(w, http.StatusBadRequest, fmt.Sprintf("region_id: %q is not a valid region ID.", r.PathValue("region_id")))
			return
		}
		limit, offset, ok := gcorePaging(w, r, gcoreDefaultLimit)
		if !ok {
			return
		}
		s.mu.Lock()
		ri := slices.IndexFunc(s.regions, func(x GcoreRegion) bool { return x.ID == region })
		var rg GcoreRegion
		var insts []GcoreInstance
		if ri >= 0 {
			rg = s.regions[ri]
			for _, inst := range s.gcoreInstances {
				if inst.ProjectID == project && inst.RegionID == region && inst.Kind == kind {
					insts = append(insts, inst)
				}
			}
		}
		s.mu.Unlock()
		if ri < 0 {
			gcoreError(w, http.StatusNotFound, fmt.Sprintf("Region %d not found.", region))
			return
		}
		writeGcorePage(w, insts, limit, offset, func(inst GcoreInstance) any { return s.gcoreInstanceDTO(inst, rg) })
	}
}

// gcoreInstanceDTO is an instance on the wire, in the field generation
// the instance or the server asks for, with fields clients do not read.
func (s *Server) gcoreInstanceDTO(inst GcoreInstance, rg GcoreRegion) any {
	addresses := map[string][]map[string]any{}
	var fixed []map[string]any
	for _, a := range inst.Addresses {
		entry := map[string]any{"addr": a.Addr, "type": a.Type}
		if a.Type == "fixed" {
			entry["interface_name"] = nil
			fixed = append(fixed, map[string]any{"external": a.External, "ip_address": a.Addr, "subnet_id": newUUID()})
		}
		addresses[a.Network] = append(addresses[a.Network], entry)
	}
	var key any
	if inst.KeyName != "" {
		key = inst.KeyName
	}
	m := map[string]any{
		"status": inst.Status, "vm_state": strings.ToLower(inst.Status),
		"region": rg.Name, "region_id": inst.RegionID, "project_id": inst.ProjectID,
		"addresses": addresses, "fixed_ip_assignments": fixed,
		"flavor":   map[string]any{"flavor_id": "g1-gpu-1-8-1-h100", "vcpus": 8, "ram": 65536},
		"metadata": map[string]any{"task": "train"}, "volumes": []any{}, "task_state": nil,
	}
	if inst.OldFields || s.opts.GcoreOldInstanceFields {
		m["instance_id"], m["instance_name"], m["instance_created"], m["keypair_name"] = inst.ID, inst.Name, inst.CreatedAt.Format(time.RFC3339), key
	} else {
		m["id"], m["name"], m["created_at"], m["ssh_key_name"] = inst.ID, inst.Name, inst.CreatedAt.Format(time.RFC3339), key
	}
	return s.withExtras(m)
}

// sesterceInstanceDTO is GpuCloudInstance on the wire; detail adds
// sshKey and portForwards (GpuCloudInstanceDetails).
func (s *Server) sesterceInstanceDTO(inst SesterceInstance, detail bool) any {
	var ip, user, port, deletedAt any
	if inst.IP != "" {
		ip = inst.IP
	}
	if inst.User != "" {
		user = inst.User
	}
	if inst.Port != 0 {
		port = inst.Port
	}
	if inst.DeletedAt != nil {
		deletedAt = inst.DeletedAt.Format(jsTime)
	}
	m := map[string]any{
		"_id": inst.ID, "name": inst.Name, "provider": "sesterce",
		"region": map[string]any{"name": inst.Region, "countryCode": "FR"},
		"status": inst.Status, "ip": ip, "sshUser": user, "sshPort": port,
		"os": "ubuntu-22.04", "createdAt": inst.CreatedAt.Format(jsTime), "deletedAt": deletedAt,
		"gpu": map[string]any{"model": "H100", "count": 1}, "hourlyPrice": 2.5,
	}
	if detail {
		var key any
		if inst.KeyID != "" {
			k := map[string]any{"_id": inst.KeyID}
			if inst.KeyPublicKey != "" {
				k["name"], k["publicKey"] = inst.KeyName, inst.KeyPublicKey
				k["createdAt"], k["updatedAt"] = inst.CreatedAt.Format(jsTime), inst.CreatedAt.Format(jsTime)
			}
			key = k
		}
		m["sshKey"] = key
		m["portForwards"] = []any{map[string]any{"internalPort": 8888, "externalPort": 40000}}
	}
	return s.withExtras(m)
}

func (s *Server) sesterceInstanceList(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.sesterceAuth(w, r)
	if !ok {
		return
	}
	insts := s.SesterceInstances()
	items := make([]any, 0, len(insts))
	for _, inst := range insts {
		if inst.Account == acct {
			items = append(items, s.sesterceInstanceDTO(inst, false))
		}
	}
	if env := s.opts.SesterceInstancesEnvelope; env != "" {
		writeJSON(w, http.StatusOK, map[string]any{env: items, "total": len(items)})
		return
	}
	writeJSON(w, http.StatusOK, items)
}

func (s *Server) sesterceInstanceGet(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.sesterceAuth(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	i := slices.IndexFunc(s.sesterceInstances, func(x SesterceInstance) bool { return x.ID == id && x.Account == acct })
	var inst SesterceInstance
	if i >= 0 {
		inst = s.sesterceInstances[i]
	}
	s.mu.Unlock()
	if i < 0 {
		sesterceNotFound(w)
		return
	}
	writeJSON(w, http.StatusOK, s.sesterceInstanceDTO(inst, true))
}
