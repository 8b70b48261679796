package policy

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Built-in values of the sections other than policies.
const (
	DefaultStatePath     = "/var/lib/rotatord/state.db"
	DefaultControlSocket = "/run/rotatord/rotatord.sock"
	DefaultVaultMount    = "secret"
	DefaultVaultTokenEnv = "VAULT_TOKEN"
	DefaultAppRoleMount  = "approle"
	DefaultSesterceURL   = "https://api.cloud.sesterce.com"
	DefaultGcoreURL      = "https://api.gcore.com"
)

// Vault auth methods.
const (
	AuthToken   = "token"
	AuthAppRole = "approle"
)

// MaxConcurrency is the most requests in flight a provider account may be
// given (its concurrency setting).
const MaxConcurrency = 256

// maxSocketPath is the longest path a Unix socket address can hold on
// Linux (sun_path is 108 bytes with its terminating NUL).
const maxSocketPath = 107

var (
	topKeys      = []string{"state", "control", "metrics", "vault", "slack", "report", "providers", "defaults", "policies", "webhooks", "audit"}
	vaultKeys    = []string{"address", "mount", "auth"}
	authKeys     = []string{"method", "token_env", "token_file", "role_id_file", "secret_id_file", "approle_mount"}
	slackKeys    = []string{"token_env", "token_file", "webhook_url_env", "webhook_url_file", "channel"}
	reportKeys   = []string{"schedule", "channel"}
	providerKeys = []string{"name", "type", "base_url", "api_key_env", "api_key_file", "rate_limit", "timeout", "concurrency", "inventory", "regions"}
)

// config walks the whole document. Sections are read in dependency order
// (slack before report and policies, providers before policies) so that
// cross-references can be checked as they are met.
func (p *parser) config(root *yaml.Node) *Config {
	root = deref(root)
	cfg := &Config{}
	if root.Kind != yaml.MappingNode {
		p.errs = append(p.errs, lineError{line: root.Line, msg: fmt.Sprintf(
			"the config must be a mapping of sections (state, vault, providers, policies, ...) (got %s)", kindName(root))})
		return cfg
	}
	top, _ := p.mapping(root, where{}, "", topKeys)
	cfg.State = p.state(top)
	cfg.Control = p.control(top)
	cfg.Metrics = p.metrics(top)
	cfg.Vault = p.vault(top)
	cfg.Slack = p.slack(top)
	cfg.Report = p.report(top, cfg.Slack)
	cfg.Providers = p.providers(top)
	cfg.Policies = p.policies(top, cfg)
	cfg.Webhooks = p.webhooks(top)
	cfg.Audit = p.audit(top)
	return cfg
}

// section reads a top-level mapping; ok is false when it is absent.
func (p *parser) section(top fields, name string, known []string) (fields, bool) {
	e, present := top.m[name]
	if !present {
		return fields{}, false
	}
	return p.mapping(e.val, where{}, name, known)
}

func (p *parser) control(top fields) ControlConfig {
	cc := ControlConfig{Socket: DefaultControlSocket}
	f, ok := p.section(top, "control", []string{"socket"})
	if !ok {
		return cc
	}
	w := where{path: "control."}
	if v := p.str(f, w, "socket"); v.set {
		switch {
		case v.v == "":
			p.errorf(v.line, w, "socket", "must not be empty; leave it out for %s", DefaultControlSocket)
		case len(v.v) > maxSocketPath:
			p.gotf(v.line, w, "socket", v.raw, "too long for a Unix socket path (%d bytes, at most %d)", len(v.v), maxSocketPath)
		default:
			cc.Socket = v.v
		}
	}
	return cc
}

func (p *parser) metrics(top fields) MetricsConfig {
	f, ok := p.section(top, "metrics", []string{"listen"})
	if !ok {
		return MetricsConfig{}
	}
	w := where{path: "metrics."}
	v := p.str(f, w, "listen")
	switch {
	case !v.set && !f.has("listen"):
		p.errorf(f.line, w, "listen", "required when metrics is present; leave the section out to turn metrics off")
	case !v.set:
		p.errorf(f.m["listen"].key.Line, w, "listen", "required when metrics is present; leave the section out to turn metrics off")
	default:
		if why := checkListen(v.v); why != "" {
			p.gotf(v.line, w, "listen", v.raw, "%s", why)
			return MetricsConfig{}
		}
	}
	return MetricsConfig{Listen: v.v}
}

func (p *parser) vault(top fields) VaultConfig {
	vc := VaultConfig{Mount: DefaultVaultMount, Auth: VaultAuth{Method: AuthToken}}
	f, ok := p.section(top, "vault", vaultKeys)
	if !ok {
		if e, present := top.m["vault"]; !present || isNull(deref(e.val)) {
			line := top.line
			if present {
				line = e.key.Line
			}
			p.errorf(line, where{}, "vault", "required; rotatord keeps every private key in Vault")
		}
		return vc
	}
	w := where{path: "vault."}
	switch addr := p.str(f, w, "address"); {
	case !addr.set:
		p.errorf(f.line, w, "address", "required, such as https://vault.internal:8200")
	case hasUserinfo(addr.v):
		// Not quoted: the user part may be a token.
		p.errorf(addr.line, w, "address", "must not carry credentials; use auth.token_env or auth.token_file")
	default:
		if why := checkURL(addr.v); why != "" {
			p.gotf(addr.line, w, "address", addr.raw, "%s", why)
		}
		vc.Address = strings.TrimRight(addr.v, "/")
	}
	if m := p.str(f, w, "mount"); m.set {
		if m.v == "" || strings.HasPrefix(m.v, "/") || strings.HasSuffix(m.v, "/") {
			p.gotf(m.line, w, "mount", m.raw, "must be a mount path without leading or trailing /, such as %s", DefaultVaultMount)
		} else {
			vc.Mount = m.v
		}
	}
	vc.Auth = p.vaultAuth(f, w)
	return vc
}

func (p *parser) vaultAuth(vault fields, vw where) VaultAuth {
	a := VaultAuth{Method: AuthToken}
	f, ok := p.mapping(vault.m["auth"].val, vw, "auth", authKeys)
	if !ok {
		a.TokenEnv = DefaultVaultTokenEnv
		return a
	}
	w := vw.in("auth")
	method := p.str(f, w, "method")
	if method.set {
		if method.v != AuthToken && method.v != AuthAppRole {
			p.gotf(method.line, w, "method", method.raw, "must be %s", quoteList(AuthToken, AuthAppRole))
			return a
		}
		a.Method = method.v
	}
	tokenEnv := p.envRef(f, w, "token_env")
	tokenFile := p.fileRef(f, w, "token_file")
	roleID := p.fileRef(f, w, "role_id_file")
	secretID := p.fileRef(f, w, "secret_id_file")
	mount := p.str(f, w, "approle_mount")
	switch a.Method {
	case AuthToken:
		for i, v := range []src{roleID.src, secretID.src, mount.src} {
			if v.set || v.bad {
				p.errorf(v.line, w, []string{"role_id_file", "secret_id_file", "approle_mount"}[i], "only used with method %s (method is %s)", AuthAppRole, AuthToken)
			}
		}
		if tokenEnv.set && tokenFile.set {
			p.errorf(tokenFile.line, w, "token_file", "set token_env or token_file, not both")
		}
		a.TokenEnv, a.TokenFile = tokenEnv.v, tokenFile.v
		if !tokenEnv.set && !tokenFile.set && !tokenEnv.bad && !tokenFile.bad {
			a.TokenEnv = DefaultVaultTokenEnv
		}
	case AuthAppRole:
		for i, v := range []src{tokenEnv.src, tokenFile.src} {
			if v.set || v.bad {
				p.errorf(v.line, w, []string{"token_env", "token_file"}[i], "only used with method %s (method is %s)", AuthToken, AuthAppRole)
			}
		}
		if !roleID.set && !roleID.bad {
			p.errorf(f.line, w, "role_id_file", "required with method %s", AuthAppRole)
		}
		if !secretID.set && !secretID.bad {
			p.errorf(f.line, w, "secret_id_file", "required with method %s", AuthAppRole)
		}
		a.RoleIDFile, a.SecretIDFile = roleID.v, secretID.v
		a.AppRoleMount = DefaultAppRoleMount
		if mount.set {
			if mount.v == "" || strings.HasPrefix(mount.v, "/") || strings.HasSuffix(mount.v, "/") {
				p.gotf(mount.line, w, "approle_mount", mount.raw, "must be a mount path without leading or trailing /, such as %s", DefaultAppRoleMount)
			} else {
				a.AppRoleMount = mount.v
			}
		}
	}
	return a
}

// envRef reads the name of an environment variable that holds a secret.
// The value is never quoted in messages: when it is not a variable name it
// is most likely the secret itself.
func (p *parser) envRef(f fields, w where, key string) val[string] {
	v := p.str(f, w, key)
	if !v.set || envName(v.v) {
		return v
	}
	if strings.HasPrefix(v.v, "$") && envName(strings.Trim(v.v, "${}")) {
		p.errorf(v.line, w, key, "write the variable's name without $, such as %s", strings.Trim(v.v, "${}"))
	} else {
		p.errorf(v.line, w, key, "must be the name of an environment variable (letters, digits, _), not the secret itself")
	}
	v.set, v.bad, v.v = false, true, ""
	return v
}

// fileRef reads the path of a file that holds a secret.
func (p *parser) fileRef(f fields, w where, key string) val[string] {
	v := p.str(f, w, key)
	if v.set && strings.TrimSpace(v.v) == "" {
		p.errorf(v.line, w, key, "must not be empty")
		v.set, v.bad = false, true
	}
	return v
}

// oneOf checks that exactly one of refs is set (in the order written in
// refs) and returns its key, or "" after reporting the mistake.
func (p *parser) oneOf(f fields, w where, refs []string, vals []val[string]) string {
	chosen := -1
	for i, v := range vals {
		if !v.set && !v.bad {
			continue
		}
		if chosen < 0 {
			chosen = i
			continue
		}
		// The message goes to the one written last.
		first, second := chosen, i
		if vals[second].line < vals[first].line {
			first, second = second, first
		}
		p.errorf(vals[second].line, w, refs[second], "set only one of %s (%s is set at line %d)", quoteList(refs...), refs[first], vals[first].line)
		return ""
	}
	if chosen < 0 {
		// A literal secret was already reported with the fix.
		if !f.literal {
			p.errorf(f.line, w, refs[0], "one of %s is required", quoteList(refs...))
		}
		return ""
	}
	if vals[chosen].bad {
		return ""
	}
	return refs[chosen]
}

func (p *parser) slack(top fields) *SlackConfig {
	f, ok := p.section(top, "slack", slackKeys)
	if !ok {
		return nil
	}
	w := where{path: "slack."}
	refs := []string{"token_env", "token_file", "webhook_url_env", "webhook_url_file"}
	vals := []val[string]{p.envRef(f, w, refs[0]), p.fileRef(f, w, refs[1]), p.envRef(f, w, refs[2]), p.fileRef(f, w, refs[3])}
	sc := &SlackConfig{TokenEnv: vals[0].v, TokenFile: vals[1].v, WebhookURLEnv: vals[2].v, WebhookURLFile: vals[3].v}
	chosen := p.oneOf(f, w, refs, vals)
	ch := p.str(f, w, "channel")
	switch {
	case ch.set && strings.TrimSpace(ch.v) == "":
		p.errorf(ch.line, w, "channel", "must not be empty")
	case ch.set:
		sc.Channel = ch.v
	case chosen == "token_env" || chosen == "token_file":
		p.errorf(f.line, w, "channel", "required with a bot token: where messages go unless a policy says otherwise")
	}
	return sc
}

func (p *parser) report(top fields, slack *SlackConfig) *ReportConfig {
	f, ok := p.section(top, "report", reportKeys)
	if !ok {
		return nil
	}
	w := where{path: "report."}
	rc := &ReportConfig{}
	sched := p.schedule(f, w, "schedule")
	switch {
	case sched.set:
		rc.Schedule = sched.v
	case !sched.bad:
		p.errorf(f.line, w, "schedule", "required, such as \"0 9 * * 1\" (Mondays at 09:00)")
	}
	ch := p.str(f, w, "channel")
	switch {
	case ch.set && strings.TrimSpace(ch.v) == "":
		p.errorf(ch.line, w, "channel", "must not be empty")
	case ch.set:
		rc.Channel = ch.v
	case slack != nil:
		rc.Channel = slack.Channel
	}
	if slack == nil {
		p.errorf(top.m["report"].key.Line, where{}, "report", "the digest is sent to Slack; add a slack section or leave report out")
	}
	return rc
}

// schedule reads and checks a cron spec.
func (p *parser) schedule(f fields, w where, key string) val[string] {
	v := p.str(f, w, key)
	if !v.set {
		return v
	}
	if _, err := parseCron(v.v); err != nil {
		p.gotf(v.line, w, key, v.raw, "invalid cron spec: %v", err)
		v.set, v.bad = false, true
	}
	return v
}

// item is one element of the providers or policies list.
type item struct {
	n *yaml.Node
	w where
}

// items reads a top-level list and labels each element by its name (or
// its position when it has none) so that every message about it, even an
// unknown key met before the name, says which one it is.
//
// It returns ok=false when it already reported why there are none.
func (p *parser) items(top fields, section, kind string) (items []item, ok bool) {
	e, present := top.m[section]
	if !present {
		return nil, true
	}
	n := deref(e.val)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, where{}, section, "must be a list of %s (got %s)", section, kindName(n))
		return nil, false
	}
	if !p.visit(len(n.Content)) {
		return nil, false
	}
	out := make([]item, 0, len(n.Content))
	for i, c := range n.Content {
		c = deref(c)
		label := fmt.Sprintf("%s #%d", kind, i+1)
		if c.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(c.Content); j += 2 {
				k, v := deref(c.Content[j]), deref(c.Content[j+1])
				if k.Value == "name" && v.Kind == yaml.ScalarNode && v.Value != "" && !isNull(v) {
					label = fmt.Sprintf("%s %q", kind, v.Value)
					break
				}
			}
		}
		out = append(out, item{n: c, w: where{label: label}})
	}
	return out, true
}

func (p *parser) providers(top fields) []Provider {
	items, ok := p.items(top, "providers", "provider")
	if !ok {
		return nil
	}
	if len(items) == 0 {
		line := top.line
		if e, ok := top.m["providers"]; ok {
			line = e.key.Line
		}
		p.errorf(line, where{}, "providers", "at least one provider is required")
		return nil
	}
	var out []Provider
	first := map[string]int{}
	for _, it := range items {
		if it.n.Kind != yaml.MappingNode {
			p.errorf(it.n.Line, where{}, "providers", "each provider must be a mapping of keys to values (got %s)", kindName(it.n))
			continue
		}
		f, _ := p.mapping(it.n, it.w, "", providerKeys)
		w := it.w
		pr := Provider{Line: it.n.Line}
		name := p.str(f, w, "name")
		switch {
		case !name.set:
			p.errorf(f.line, w, "name", "required")
		case !nameChars(name.v):
			p.gotf(name.line, w, "name", name.raw, "must use only letters, digits, '.', '_' and '-'")
		default:
			if line, dup := first[name.v]; dup {
				p.gotf(name.line, w, "name", name.raw, "already used by the provider at line %d", line)
			} else {
				first[name.v] = name.line
			}
			pr.Name = name.v
		}
		typ := p.str(f, w, "type")
		switch {
		case !typ.set:
			p.errorf(f.line, w, "type", "required: %s", quoteList(TypeSesterce, TypeGcore))
		case typ.v != TypeSesterce && typ.v != TypeGcore:
			p.gotf(typ.line, w, "type", typ.raw, "must be %s", quoteList(TypeSesterce, TypeGcore))
		default:
			pr.Type = typ.v
		}
		switch u := p.str(f, w, "base_url"); {
		case u.set && hasUserinfo(u.v):
			p.errorf(u.line, w, "base_url", "must not carry credentials; use api_key_env or api_key_file")
		case u.set:
			if why := checkURL(u.v); why != "" {
				p.gotf(u.line, w, "base_url", u.raw, "%s", why)
			}
			pr.BaseURL = strings.TrimRight(u.v, "/")
		case pr.Type == TypeSesterce:
			pr.BaseURL = DefaultSesterceURL
		case pr.Type == TypeGcore:
			pr.BaseURL = DefaultGcoreURL
		}
		refs := []string{"api_key_env", "api_key_file"}
		vals := []val[string]{p.envRef(f, w, refs[0]), p.fileRef(f, w, refs[1])}
		p.oneOf(f, w, refs, vals)
		pr.APIKeyEnv, pr.APIKeyFile = vals[0].v, vals[1].v
		if rl := p.number(f, w, "rate_limit"); rl.set {
			if rl.v < 0 {
				p.gotf(rl.line, w, "rate_limit", rl.raw, "must be 0 (the provider's default) or more requests per second")
			}
			pr.RateLimit = rl.v
		}
		if t := p.duration(f, w, "timeout"); t.set {
			if t.v <= 0 {
				p.gotf(t.line, w, "timeout", t.raw, "must be a positive duration such as 30s")
			}
			pr.Timeout = t.v
		}
		if c := p.integer(f, w, "concurrency"); c.set {
			if c.v < 1 || c.v > MaxConcurrency {
				p.gotf(c.line, w, "concurrency", c.raw, "must be from 1 to %d requests in flight", MaxConcurrency)
			}
			pr.Concurrency = int(c.v)
		}
		pr.NoInventory = !p.boolean(f, w, "inventory").or(true)
		pr.Regions = p.regions(f, w, pr.Type)
		out = append(out, pr)
	}
	return out
}

// regions reads a Gcore provider's regions: a list of region IDs, each
// once.
func (p *parser) regions(f fields, w where, typ string) []int64 {
	e, ok := f.m["regions"]
	if !ok {
		return nil
	}
	n := deref(e.val)
	if isNull(n) {
		return nil
	}
	if typ == TypeSesterce {
		p.errorf(e.key.Line, w, "regions", "gcore only: Sesterce lists every instance of the account")
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, w, "regions", "must be a list of Gcore region IDs, such as [76, 124] (got %s)", kindName(n))
		return nil
	}
	if !p.visit(len(n.Content)) {
		return nil
	}
	var out []int64
	for _, item := range n.Content {
		item = deref(item)
		var id int64
		if item.Kind != yaml.ScalarNode || item.ShortTag() != "!!int" || item.Decode(&id) != nil || id <= 0 {
			p.gotf(item.Line, w, "regions", item.Value, "list items must be Gcore region IDs (whole numbers above 0)")
			continue
		}
		if slices.Contains(out, id) {
			p.gotf(item.Line, w, "regions", item.Value, "region listed twice")
			continue
		}
		out = append(out, id)
	}
	return out
}
