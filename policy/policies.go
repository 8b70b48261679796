package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Built-in values of a policy, used where neither the policy nor the
// defaults block sets a key.
const (
	DefaultSchedule     = "0 3 * * *"
	DefaultMaxAge       = 90 * 24 * time.Hour
	DefaultRotateBefore = 7 * 24 * time.Hour
	DefaultGracePeriod  = 7 * 24 * time.Hour
	DefaultMaxFailures  = 5
	DefaultRSABits      = 3072
	DefaultCurve        = "p256"
)

var (
	policyKeys  = []string{"name", "provider", "project_id", "shared_in_project", "schedule", "max_age", "rotate_before", "grace_period", "max_failures", "key", "make_default", "name_prefix", "vault_path", "notify", "window", "jitter", "hosts"}
	keySpecKeys = []string{"type", "bits", "curve", "generate"}
	notifyKeys  = []string{"channel", "on"}
	curves      = []string{"p256", "p384", "p521"}
)

// rawPolicy is a policy or the defaults block as written: each value
// checked on its own, with where it came from.
type rawPolicy struct {
	line                                            int
	name, provider, schedule, namePrefix, vaultPath val[string]
	projectID, maxFailures, keyBits                 val[int64]
	shared, makeDefault                             val[bool]
	maxAge, rotateBefore, gracePeriod, jitter       val[time.Duration]
	keyType, keyCurve, keyGenerate, channel         val[string]
	on                                              val[[]string]
	window                                          val[windowSpec]
	hosts                                           val[Hosts]
}

// own reports whether the value was written, well formed, in the policy
// itself rather than inherited.
func (s src) own() bool { return s.set && !s.inherited }

// reject reports a value as wrong and marks it so, so that no later check
// builds on it and no default silently replaces it.
func (p *parser) reject(s *src, w where, key, format string, args ...any) {
	p.gotf(s.line, w, key, s.raw, format, args...)
	s.set, s.bad = false, true
}

// policyFields reads the keys a policy and the defaults block share, and
// checks every value that can be judged on its own. Checks that need the
// provider or other keys wait for the merged policy.
func (p *parser) policyFields(f fields, w where) rawPolicy {
	rp := rawPolicy{line: f.line}
	if rp.provider = p.str(f, w, "provider"); rp.provider.set && rp.provider.v == "" {
		p.reject(&rp.provider.src, w, "provider", "must name one of the providers")
	}
	if rp.projectID = p.integer(f, w, "project_id"); rp.projectID.set && rp.projectID.v <= 0 {
		p.reject(&rp.projectID.src, w, "project_id", "must be a Gcore project ID, greater than 0")
	}
	rp.shared = p.boolean(f, w, "shared_in_project")
	rp.schedule = p.schedule(f, w, "schedule")
	if rp.maxAge = p.duration(f, w, "max_age"); rp.maxAge.set && rp.maxAge.v <= 0 {
		p.reject(&rp.maxAge.src, w, "max_age", "must be longer than 0")
	}
	rp.rotateBefore = p.duration(f, w, "rotate_before")
	rp.gracePeriod = p.duration(f, w, "grace_period")
	if rp.maxFailures = p.integer(f, w, "max_failures"); rp.maxFailures.set && rp.maxFailures.v < 1 {
		p.reject(&rp.maxFailures.src, w, "max_failures", "must be 1 or more")
	}
	rp.makeDefault = p.boolean(f, w, "make_default")
	if rp.namePrefix = p.str(f, w, "name_prefix"); rp.namePrefix.set {
		switch v := rp.namePrefix.v; {
		case !nameChars(v):
			p.reject(&rp.namePrefix.src, w, "name_prefix", "must use only letters, digits, '.', '_' and '-'")
		case len(v) > maxNamePrefix:
			p.reject(&rp.namePrefix.src, w, "name_prefix", "too long: %d characters, at most %d so that <name_prefix>-yyyymmddThhmmss fits the providers' %d-character key names", len(v), maxNamePrefix, maxKeyName)
		}
	}
	if rp.vaultPath = p.str(f, w, "vault_path"); rp.vaultPath.set {
		if why := checkVaultPath(rp.vaultPath.v); rp.vaultPath.v == "" {
			p.reject(&rp.vaultPath.src, w, "vault_path", "must not be empty")
		} else if why != "" {
			p.reject(&rp.vaultPath.src, w, "vault_path", "%s", why)
		}
	}
	if kf, ok := p.mapping(f.m["key"].val, w, "key", keySpecKeys); ok {
		kw := w.in("key")
		if rp.keyType = p.str(kf, kw, "type"); rp.keyType.set && !contains([]string{KeyEd25519, KeyRSA, KeyECDSA}, rp.keyType.v) {
			p.reject(&rp.keyType.src, kw, "type", "must be %s", quoteList(KeyEd25519, KeyRSA, KeyECDSA))
		}
		if rp.keyBits = p.integer(kf, kw, "bits"); rp.keyBits.set && rp.keyBits.v != 3072 && rp.keyBits.v != 4096 {
			p.reject(&rp.keyBits.src, kw, "bits", "must be 3072 or 4096")
		}
		if rp.keyCurve = p.str(kf, kw, "curve"); rp.keyCurve.set && !contains(curves, rp.keyCurve.v) {
			p.reject(&rp.keyCurve.src, kw, "curve", "must be %s", quoteList(curves...))
		}
		if rp.keyGenerate = p.str(kf, kw, "generate"); rp.keyGenerate.set && rp.keyGenerate.v != GenerateLocal && rp.keyGenerate.v != GenerateProvider {
			p.reject(&rp.keyGenerate.src, kw, "generate", "must be %s", quoteList(GenerateLocal, GenerateProvider))
		}
	}
	if nf, ok := p.mapping(f.m["notify"].val, w, "notify", notifyKeys); ok {
		nw := w.in("notify")
		if rp.channel = p.str(nf, nw, "channel"); rp.channel.set && strings.TrimSpace(rp.channel.v) == "" {
			p.reject(&rp.channel.src, nw, "channel", "must not be empty; leave it out for the slack channel")
		}
		rp.on = p.events(nf, nw, "on")
	}
	rp.window = p.window(f, w)
	rp.jitter = p.duration(f, w, "jitter")
	rp.hosts = p.hosts(f, w)
	return rp
}

// defaults reads the defaults block and checks what it says on its own,
// including how its values fit together and with the built-in ones, so
// that a mistake there is reported once rather than once per policy.
func (p *parser) defaults(top fields, slack *SlackConfig, provTypes map[string]string) rawPolicy {
	f, ok := p.section(top, "defaults", policyKeys)
	if !ok {
		return rawPolicy{}
	}
	w := where{path: "defaults."}
	if e, ok := f.m["name"]; ok {
		p.errorf(e.key.Line, w, "name", "every policy has its own name; it cannot be defaulted")
	}
	if e, ok := f.m["vault_path"]; ok {
		p.errorf(e.key.Line, w, "vault_path", "every policy keeps its key at its own vault_path; set it in each policy")
	}
	d := p.policyFields(f, w)
	d.vaultPath = val[string]{}
	if d.provider.set {
		if _, ok := provTypes[d.provider.v]; !ok {
			p.reject(&d.provider.src, w, "provider", "no such provider is defined under providers%s", didYouMean(d.provider.v, provTypes))
		}
	}
	if d.channel.set && slack == nil {
		p.reject(&d.channel.src, w.in("notify"), "channel", "no slack section is configured, so nothing would be sent")
	}
	p.shorter(w, d.line, d.rotateBefore, "rotate_before", DefaultRotateBefore, d.maxAge, "max_age", DefaultMaxAge, true)
	p.shorter(w, d.line, d.gracePeriod, "grace_period", DefaultGracePeriod, d.maxAge, "max_age", DefaultMaxAge, true)
	p.jitterFits(w, d.jitter, d.schedule, d.window, true)
	p.windowFits(w, d.window, d.rotateBefore, d.jitter, true)
	if d.keyGenerate.set && d.keyGenerate.v == GenerateProvider && d.keyType.or(KeyEd25519) != KeyEd25519 {
		p.reject(&d.keyGenerate.src, w.in("key"), "generate", "Gcore generates Ed25519 keys only; use type %s or generate: %s", KeyEd25519, GenerateLocal)
	}
	return d
}

// pick merges one key: the policy's own value (even a rejected one, so a
// mistake is not papered over by a default), else the defaults block's.
func pick[T any](own, def val[T]) val[T] {
	if own.set || own.bad {
		return own
	}
	if def.set {
		def.inherited = true
		return def
	}
	return val[T]{}
}

// shorter checks that small < big, where either may be written in the
// policy, inherited from defaults, or built in. The message goes to the
// value written in the policy, so a person fixes the line it names; when
// neither is (forDefaults false) the defaults block was already checked.
func (p *parser) shorter(w where, line int, small val[time.Duration], smallKey string, smallDef time.Duration,
	big val[time.Duration], bigKey string, bigDef time.Duration, forDefaults bool) {
	if small.bad || big.bad || small.or(smallDef) < big.or(bigDef) {
		return
	}
	mine := func(v val[time.Duration]) bool { return v.own() || forDefaults && v.set }
	switch {
	case mine(small):
		p.gotf(small.line, w, smallKey, small.raw, "must be shorter than %s (%s)", bigKey, describe(big, bigDef))
	case mine(big):
		p.gotf(big.line, w, bigKey, big.raw, "must be longer than %s (%s)", smallKey, describe(small, smallDef))
	}
}

// describe says what a duration is and where it came from.
func describe(v val[time.Duration], def time.Duration) string {
	switch {
	case v.inherited:
		return fmt.Sprintf("%s from defaults at line %d", v.raw, v.line)
	case v.set:
		return v.raw
	}
	return formatDuration(def) + " by default"
}

// resolved is a merged policy with where its identifying values came from,
// for the checks across policies.
type resolved struct {
	Policy
	w                                   where
	name, vaultPath, namePrefix, makeDf src
}

func (p *parser) policies(top fields, cfg *Config) []Policy {
	provTypes := map[string]string{}
	for _, pr := range cfg.Providers {
		if _, dup := provTypes[pr.Name]; pr.Name != "" && !dup {
			provTypes[pr.Name] = pr.Type
		}
	}
	defs := p.defaults(top, cfg.Slack, provTypes)
	items, ok := p.items(top, "policies", "policy")
	if !ok {
		return nil
	}
	if len(items) == 0 {
		line := top.line
		if e, ok := top.m["policies"]; ok {
			line = e.key.Line
		}
		p.errorf(line, where{}, "policies", "at least one policy is required; there is nothing to rotate")
		return nil
	}
	var all []resolved
	for _, it := range items {
		if it.n.Kind != yaml.MappingNode {
			p.errorf(it.n.Line, where{}, "policies", "each policy must be a mapping of keys to values (got %s)", kindName(it.n))
			continue
		}
		f, _ := p.mapping(it.n, it.w, "", policyKeys)
		rp := p.policyFields(f, it.w)
		rp.name = p.str(f, it.w, "name")
		switch {
		case !rp.name.set:
			p.errorf(f.line, it.w, "name", "required")
		case !nameChars(rp.name.v):
			p.reject(&rp.name.src, it.w, "name", "must use only letters, digits, '.', '_' and '-'")
		}
		all = append(all, p.resolve(rp, defs, it.w, cfg.Slack, provTypes))
	}
	p.crossCheck(all)
	p.discoverFits(all, cfg.Providers)
	out := make([]Policy, len(all))
	for i, r := range all {
		out[i] = r.Policy
	}
	return out
}

// resolve merges the defaults into one policy, applies the built-in and
// per-provider-type defaults, and checks how the values fit together.
//
// Keys that only one provider type understands (project_id,
// shared_in_project and make_default: true, generate: provider) apply from
// defaults only to the policies of that type, so one defaults block can
// serve a config that mixes providers; written in a policy of the other
// type they are errors.
func (p *parser) resolve(rp, defs rawPolicy, w where, slack *SlackConfig, provTypes map[string]string) resolved {
	pol := Policy{Name: rp.name.v, Line: rp.line}

	prov := pick(rp.provider, defs.provider)
	switch {
	case prov.own():
		if t, ok := provTypes[prov.v]; ok {
			pol.ProviderType = t
		} else {
			p.reject(&prov.src, w, "provider", "no such provider is defined under providers%s", didYouMean(prov.v, provTypes))
		}
	case prov.set:
		pol.ProviderType = provTypes[prov.v]
	case !prov.bad:
		p.errorf(rp.line, w, "provider", "required: the name of one of the providers")
	}
	pol.Provider = prov.v

	keyType := pick(rp.keyType, defs.keyType)
	pol.Key.Type = keyType.or(KeyEd25519)
	switch {
	case pol.Key.Type == KeyRSA:
		pol.Key.Bits = int(pick(rp.keyBits, defs.keyBits).or(DefaultRSABits))
	case rp.keyBits.own() && !keyType.bad:
		p.gotf(rp.keyBits.line, w, "key.bits", rp.keyBits.raw, "only for type %s (type is %s)", KeyRSA, pol.Key.Type)
	}
	switch {
	case pol.Key.Type == KeyECDSA:
		pol.Key.Curve = pick(rp.keyCurve, defs.keyCurve).or(DefaultCurve)
	case rp.keyCurve.own() && !keyType.bad:
		p.gotf(rp.keyCurve.line, w, "key.curve", rp.keyCurve.raw, "only for type %s (type is %s)", KeyECDSA, pol.Key.Type)
	}
	pol.Key.Generate = GenerateLocal

	projectID := pick(rp.projectID, defs.projectID)
	makeDefault := pick(rp.makeDefault, defs.makeDefault)
	switch pol.ProviderType {
	case TypeGcore:
		switch {
		case projectID.set:
			pol.ProjectID = projectID.v
		case !projectID.bad:
			p.errorf(rp.line, w, "project_id", "required for a %s provider: the Gcore project that holds the keys", TypeGcore)
		}
		pol.SharedInProject = pick(rp.shared, defs.shared).or(true)
		if rp.makeDefault.own() && rp.makeDefault.v {
			p.gotf(rp.makeDefault.line, w, "make_default", rp.makeDefault.raw,
				"Gcore has no default key: instances name their key at creation; leave make_default out")
		}
		gen := pick(rp.keyGenerate, defs.keyGenerate)
		pol.Key.Generate = gen.or(GenerateLocal)
		if pol.Key.Generate == GenerateProvider && pol.Key.Type != KeyEd25519 {
			switch {
			case gen.own():
				p.gotf(gen.line, w, "key.generate", gen.raw, "Gcore generates Ed25519 keys only; use type %s or generate: %s", KeyEd25519, GenerateLocal)
			case keyType.own():
				p.gotf(keyType.line, w, "key.type", keyType.raw, "generate: %s from defaults at line %d makes Ed25519 keys only; add generate: %s to this key",
					GenerateProvider, gen.line, GenerateLocal)
			}
		}
	case TypeSesterce:
		if rp.projectID.own() {
			p.gotf(rp.projectID.line, w, "project_id", rp.projectID.raw, "only for %s providers; a Sesterce key belongs to the whole account", TypeGcore)
		}
		if rp.shared.own() {
			p.gotf(rp.shared.line, w, "shared_in_project", rp.shared.raw, "only for %s providers", TypeGcore)
		}
		pol.MakeDefault = makeDefault.or(true)
		if rp.keyGenerate.own() && rp.keyGenerate.v == GenerateProvider {
			p.gotf(rp.keyGenerate.line, w, "key.generate", rp.keyGenerate.raw, "only %s can generate keys; Sesterce takes a public key, so use generate: %s", TypeGcore, GenerateLocal)
		}
	}

	schedule := pick(rp.schedule, defs.schedule)
	pol.Schedule = schedule.or(DefaultSchedule)
	maxAge := pick(rp.maxAge, defs.maxAge)
	rotateBefore := pick(rp.rotateBefore, defs.rotateBefore)
	grace := pick(rp.gracePeriod, defs.gracePeriod)
	pol.MaxAge = maxAge.or(DefaultMaxAge)
	pol.RotateBefore = rotateBefore.or(DefaultRotateBefore)
	pol.GracePeriod = grace.or(DefaultGracePeriod)
	p.shorter(w, rp.line, rotateBefore, "rotate_before", DefaultRotateBefore, maxAge, "max_age", DefaultMaxAge, false)
	p.shorter(w, rp.line, grace, "grace_period", DefaultGracePeriod, maxAge, "max_age", DefaultMaxAge, false)
	pol.MaxFailures = int(pick(rp.maxFailures, defs.maxFailures).or(DefaultMaxFailures))

	window := pick(rp.window, defs.window)
	if window.set {
		win := window.v.Window
		pol.Window = &win
	}
	jitter := pick(rp.jitter, defs.jitter)
	pol.Jitter = jitter.or(0)
	p.jitterFits(w, jitter, schedule, window, false)
	p.windowFits(w, window, rotateBefore, jitter, false)

	if hosts := pick(rp.hosts, defs.hosts); hosts.set {
		h := hosts.v
		h.Targets = slices.Clone(h.Targets)
		pol.Hosts = &h
	}

	prefix := pick(rp.namePrefix, defs.namePrefix)
	switch {
	case prefix.set:
		pol.NamePrefix = prefix.v
	case !prefix.bad && rp.name.set:
		pol.NamePrefix = pol.Name
		if len(pol.Name) > maxNamePrefix {
			p.reject(&rp.name.src, w, "name", "too long to be the key name prefix: %d characters, at most %d so that <name>-yyyymmddThhmmss fits the providers' %d-character key names; set a shorter name_prefix",
				len(pol.Name), maxNamePrefix, maxKeyName)
		}
	}

	switch {
	case rp.vaultPath.set:
		pol.VaultPath = rp.vaultPath.v
	case !rp.vaultPath.bad:
		p.errorf(rp.line, w, "vault_path", "required: where in Vault the active key is kept, such as ssh/%s/%s", pol.ProviderType, pol.Name)
	}

	channel := pick(rp.channel, defs.channel)
	pol.Notify.Channel = channel.v
	if channel.own() && slack == nil {
		p.gotf(channel.line, w, "notify.channel", channel.raw, "no slack section is configured, so nothing would be sent")
	}
	// A copy, so that policies sharing the defaults' list do not share
	// its backing array.
	pol.Notify.On = slices.Clone(pick(rp.on, defs.on).or(Events()))

	return resolved{Policy: pol, w: w, name: rp.name.src, vaultPath: rp.vaultPath.src, namePrefix: prefix.src, makeDf: makeDefault.src}
}

// crossCheck finds policies that would step on each other: same name, same
// Vault path, same key names on one account, or two owners of one
// account's default key.
func (p *parser) crossCheck(all []resolved) {
	names := map[string]*resolved{}
	paths := map[string]*resolved{}
	prefixes := map[string]*resolved{}
	defaults := map[string]*resolved{}
	for i := range all {
		r := &all[i]
		if r.name.set {
			if o, dup := names[r.Name]; dup {
				p.gotf(r.name.line, r.w, "name", r.name.raw, "already used by the policy at line %d", o.Line)
			} else {
				names[r.Name] = r
			}
		}
		if r.vaultPath.set {
			if o, dup := paths[r.VaultPath]; dup {
				p.gotf(r.vaultPath.line, r.w, "vault_path", r.vaultPath.raw, "already used by policy %q at line %d; each policy needs its own", o.Name, o.Line)
			} else {
				paths[r.VaultPath] = r
			}
		}
		if r.ProviderType == "" || r.NamePrefix == "" {
			continue
		}
		account := fmt.Sprintf("provider %q", r.Provider)
		if r.ProviderType == TypeGcore {
			account += fmt.Sprintf(" project %d", r.ProjectID)
		}
		if o, dup := prefixes[account+"\x00"+r.NamePrefix]; dup {
			msg := fmt.Sprintf("policy %q at line %d already names its keys %s-<time> on %s; policies on one account need distinct prefixes", o.Name, o.Line, r.NamePrefix, account)
			if r.namePrefix.own() {
				p.gotf(r.namePrefix.line, r.w, "name_prefix", r.namePrefix.raw, "%s", msg)
			} else {
				p.errorf(r.Line, r.w, "name_prefix", "%s", msg)
			}
		} else {
			prefixes[account+"\x00"+r.NamePrefix] = r
		}
		if r.MakeDefault {
			if o, dup := defaults[r.Provider]; dup {
				msg := fmt.Sprintf("policy %q at line %d already makes its keys the default on %s, and an account has one default key; set make_default: false on all but one policy", o.Name, o.Line, account)
				if r.makeDf.own() {
					p.gotf(r.makeDf.line, r.w, "make_default", r.makeDf.raw, "%s", msg)
				} else {
					p.errorf(r.Line, r.w, "make_default", "%s", msg)
				}
			} else {
				defaults[r.Provider] = r
			}
		}
	}
}

// didYouMean suggests the defined provider closest to a mistyped name.
func didYouMean(name string, provTypes map[string]string) string {
	names := make([]string, 0, len(provTypes))
	for n := range provTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	if c := closest(name, names); c != "" {
		return "; did you mean " + c + "?"
	}
	return ""
}
