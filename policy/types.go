// Package policy is rotatord's configuration: the YAML file of DESIGN.md §6
// parsed, defaulted and validated into plain data. It imports nothing
// internal; every value downstream code needs is resolved here, so nothing
// else re-applies defaults.
package policy

import "time"

// Provider types.
const (
	TypeSesterce = "sesterce"
	TypeGcore    = "gcore"
)

// Key types, curves and generation modes.
const (
	KeyEd25519 = "ed25519"
	KeyRSA     = "rsa"
	KeyECDSA   = "ecdsa"

	GenerateLocal    = "local"
	GenerateProvider = "provider"
)

// Event kinds: the one set of names for what rotatord tells people about,
// in Slack, webhooks, the outbox and notify.on. Events() lists the ones a
// policy may subscribe to.
const (
	EventRotated   = "rotated"
	EventDeleted   = "deleted"
	EventFailed    = "failed"
	EventOverdue   = "overdue"
	EventFailing   = "failing"
	EventRecovered = "recovered"
	// EventExposed: a machine still runs with a key rotatord retired or
	// deleted, or with one past max_age (DESIGN.md §9.1); sent once per key.
	EventExposed = "exposed"

	// Host rotation (DESIGN.md §9.2): the current key reached hosts (one
	// event per rotation or run, listing them), a host stopped answering
	// (once per host and streak), a host presented another host key.
	EventHostUpdated     = "host_updated"
	EventHostUnreachable = "host_unreachable"
	EventHostKeyChanged  = "host_key_changed"

	// The daemon raises these, not a policy: a reload that kept the old
	// config, the scheduled compliance digest, and (with state on etcd) a
	// new leader among several rotatord processes.
	EventReloadFailed  = "reload_failed"
	EventReport        = "report"
	EventLeaderChanged = "leader_changed"
)

// Config is one parsed, validated configuration file.
type Config struct {
	File      string // the file it was read from, for messages
	State     StateConfig
	Control   ControlConfig
	Metrics   MetricsConfig
	Vault     VaultConfig
	Slack     *SlackConfig  // nil when absent
	Report    *ReportConfig // nil when absent
	Providers []Provider
	Policies  []Policy
	Webhooks  []Webhook // empty when absent
	Audit     AuditConfig
}

// ControlConfig locates the control socket.
type ControlConfig struct {
	Socket string // default /run/rotatord/rotatord.sock
}

// MetricsConfig is the Prometheus listener; Listen "" means off.
type MetricsConfig struct {
	Listen string
}

// VaultConfig says where the private keys live and how to log in.
type VaultConfig struct {
	Address string
	Mount   string // KV v2 mount, default "secret"
	Auth    VaultAuth
}

// VaultAuth is a token (from env or file) or an AppRole login.
type VaultAuth struct {
	Method       string // "token" (default) or "approle"
	TokenEnv     string // default VAULT_TOKEN when method is token and no token_file
	TokenFile    string
	RoleIDFile   string
	SecretIDFile string
	// Mount of the AppRole auth method, default "approle".
	AppRoleMount string
}

// SlackConfig is a bot token or an incoming webhook; exactly one of the
// four references is set.
type SlackConfig struct {
	TokenEnv       string
	TokenFile      string
	WebhookURLEnv  string
	WebhookURLFile string
	Channel        string // default channel
}

// ReportConfig is the scheduled compliance digest.
type ReportConfig struct {
	Schedule string // cron spec
	Channel  string // Slack channel; default Slack.Channel
}

// Provider is one provider account.
type Provider struct {
	Name       string
	Type       string // TypeSesterce or TypeGcore
	BaseURL    string // default per type
	APIKeyEnv  string
	APIKeyFile string
	RateLimit  float64 // requests per second; 0 = provider default
	// Timeout bounds one HTTP attempt; 0 = the client's default (30s).
	Timeout time.Duration
	// Concurrency bounds the requests in flight to this account; 0 = the
	// engine's default (8).
	Concurrency int
	// NoInventory is `inventory: false`: runs do not list the account's
	// machines and the key each was provisioned with (DESIGN.md §9.1),
	// which they do by default.
	NoInventory bool
	// Regions are the Gcore region IDs the inventory lists; empty means
	// every region in state ACTIVE. Gcore only.
	Regions []int64
	Line    int // line in the config file, for messages
}

// KeySpec says what kind of key to make and who makes it.
type KeySpec struct {
	Type     string // ed25519 (default) | rsa | ecdsa
	Bits     int    // rsa: 3072 (default) or 4096
	Curve    string // ecdsa: p256 (default) | p384 | p521
	Generate string // local (default) | provider
}

// Notify says where a policy's events go.
type Notify struct {
	Channel string   // "" = the global Slack channel
	On      []string // events; default rotated, deleted, failed, overdue, failing, recovered
}

// Policy is one rotation policy with every default already applied.
type Policy struct {
	Name            string
	Provider        string // provider name
	ProviderType    string // resolved type of Provider
	ProjectID       int64  // gcore only
	SharedInProject bool   // gcore only; default true
	Schedule        string // cron spec, default "0 3 * * *"
	MaxAge          time.Duration
	RotateBefore    time.Duration
	GracePeriod     time.Duration
	MaxFailures     int
	Key             KeySpec
	MakeDefault     bool   // sesterce default true, gcore false (and must be)
	NamePrefix      string // default Name
	VaultPath       string
	Notify          Notify
	// Window, when set, holds a merely due key back until a maintenance
	// window is open; nil means rotate whenever due.
	Window *Window
	// Jitter delays each scheduled evaluation by a random duration in
	// [0, Jitter), so that many policies on one schedule do not hit a
	// provider in the same second. Always shorter than the schedule's
	// shortest interval; 0 (the default) means none.
	Jitter time.Duration
	// Hosts, when set, keeps running machines' authorized_keys converged
	// with the policy's keys (DESIGN.md §9.2); nil means off.
	Hosts *Hosts
	Line  int // line in the config file, for messages
}

// Wants reports whether the policy subscribes to event.
func (n Notify) Wants(event string) bool {
	for _, e := range n.On {
		if e == event {
			return true
		}
	}
	return false
}

// ProviderByName returns the provider called name, or false.
func (c *Config) ProviderByName(name string) (Provider, bool) {
	for _, p := range c.Providers {
		if p.Name == name {
			return p, true
		}
	}
	return Provider{}, false
}

// PolicyByName returns the policy called name, or false.
func (c *Config) PolicyByName(name string) (Policy, bool) {
	for _, p := range c.Policies {
		if p.Name == name {
			return p, true
		}
	}
	return Policy{}, false
}
