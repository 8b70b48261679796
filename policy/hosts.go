package policy

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Built-in values of a hosts block (DESIGN.md §9.2).
const (
	DefaultHostPort           = 22
	DefaultAuthorizedKeys     = ".ssh/authorized_keys"
	DefaultHostsConcurrency   = 16
	DefaultHostsTimeout       = 30 * time.Second
	maxHostsConcurrency       = 1024
	maxHostsTimeout           = 10 * time.Minute
	maxAuthorizedKeysPathSize = 1024
)

// Hosts says which running machines a policy keeps converged: every host
// trusts the policy's current key and, once their grace ends, none of its
// retired keys (DESIGN.md §9.2). nil on a policy means host rotation is
// off, the default.
type Hosts struct {
	// Discover adds the running instances the provider's inventory (§9.1)
	// finds for the policy to Targets.
	Discover bool
	// Targets are the static hosts, in the order written.
	Targets []HostTarget
	// User is the login user of a target written without one, and of a
	// discovered instance that names none. "" when not set.
	User string
	// Port is the SSH port of a target written without one; default 22.
	Port int
	// KnownHosts is an OpenSSH known_hosts file host keys are checked
	// against; "" when not set.
	KnownHosts string
	// TrustOnFirstUse pins the host key first seen for a host not in
	// KnownHosts; a changed key is refused. Default false.
	TrustOnFirstUse bool
	// AuthorizedKeys is the file edited, relative to the login user's
	// home unless absolute; default .ssh/authorized_keys.
	AuthorizedKeys string
	// Concurrency bounds the hosts worked on at once; default 16.
	Concurrency int
	// Timeout bounds the work on one host, connections included; default 30s.
	Timeout time.Duration
	Line    int // line of the hosts block, for messages
}

// HostTarget is one static target, "[user@]host[:port]" as written, with
// the block's user and port filled in.
type HostTarget struct {
	User string
	Addr string // host name or IP address, without brackets
	Port int
	Line int
}

// String is the target as reports and logs name it: "ubuntu@10.0.0.5:22".
func (t HostTarget) String() string {
	return t.User + "@" + net.JoinHostPort(t.Addr, strconv.Itoa(t.Port))
}

var hostsKeys = []string{"discover", "targets", "user", "port", "known_hosts", "trust_on_first_use", "authorized_keys", "concurrency", "timeout"}

// hosts reads a hosts block and checks it whole: a block is taken from the
// policy or, when the policy has none, from defaults, never merged key by
// key (one policy's targets are not another's).
func (p *parser) hosts(f fields, w where) val[Hosts] {
	e, present := f.m["hosts"]
	hf, ok := p.mapping(e.val, w, "hosts", hostsKeys)
	if !ok {
		if present && !isNull(deref(e.val)) {
			return val[Hosts]{src: src{line: e.key.Line, bad: true}}
		}
		return val[Hosts]{}
	}
	hw := w.in("hosts")
	nerr := len(p.errs)
	h := Hosts{Line: e.key.Line, Port: DefaultHostPort, AuthorizedKeys: DefaultAuthorizedKeys,
		Concurrency: DefaultHostsConcurrency, Timeout: DefaultHostsTimeout}

	h.Discover = p.boolean(hf, hw, "discover").or(false)
	h.TrustOnFirstUse = p.boolean(hf, hw, "trust_on_first_use").or(false)
	if u := p.str(hf, hw, "user"); u.set {
		if !validUser(u.v) {
			p.gotf(u.line, hw, "user", u.raw, "must be a login name: no spaces, ':', '/' or '@'")
		} else {
			h.User = u.v
		}
	}
	if port := p.integer(hf, hw, "port"); port.set {
		if port.v < 1 || port.v > 65535 {
			p.gotf(port.line, hw, "port", port.raw, "must be a port number from 1 to 65535")
		} else {
			h.Port = int(port.v)
		}
	}
	if kh := p.str(hf, hw, "known_hosts"); kh.set {
		switch {
		case kh.v == "":
			p.errorf(kh.line, hw, "known_hosts", "must not be empty; leave it out and set trust_on_first_use: true instead")
		case strings.ContainsAny(kh.v, "\n\x00"):
			p.gotf(kh.line, hw, "known_hosts", kh.raw, "must be a file path")
		default:
			h.KnownHosts = kh.v
		}
	}
	if ak := p.str(hf, hw, "authorized_keys"); ak.set {
		if why := checkAuthorizedKeysPath(ak.v); why != "" {
			p.gotf(ak.line, hw, "authorized_keys", ak.raw, "%s", why)
		} else {
			h.AuthorizedKeys = ak.v
		}
	}
	if c := p.integer(hf, hw, "concurrency"); c.set {
		if c.v < 1 || c.v > maxHostsConcurrency {
			p.gotf(c.line, hw, "concurrency", c.raw, "must be from 1 to %d", maxHostsConcurrency)
		} else {
			h.Concurrency = int(c.v)
		}
	}
	if t := p.duration(hf, hw, "timeout"); t.set {
		if t.v < time.Second || t.v > maxHostsTimeout {
			p.gotf(t.line, hw, "timeout", t.raw, "must be from 1s to %s", formatDuration(maxHostsTimeout))
		} else {
			h.Timeout = t.v
		}
	}
	h.Targets = p.hostTargets(hf, hw, h.User, h.Port)

	if h.KnownHosts == "" && !h.TrustOnFirstUse && !hf.has("known_hosts") {
		p.errorf(hf.line, hw, "known_hosts", "required unless trust_on_first_use: true; rotatord never logs in to a host whose host key it cannot check")
	}
	if len(h.Targets) == 0 && !h.Discover && !hf.has("targets") {
		p.errorf(hf.line, hw, "targets", "required unless discover: true: the hosts to keep converged, such as [ubuntu@10.0.0.5, \"10.0.0.6:2222\"]")
	}
	if len(p.errs) > nerr {
		return val[Hosts]{src: src{line: e.key.Line, bad: true}}
	}
	return val[Hosts]{v: h, src: src{line: e.key.Line, set: true}}
}

// hostTargets reads hosts.targets: a list of "[user@]host[:port]".
func (p *parser) hostTargets(f fields, w where, user string, port int) []HostTarget {
	e, ok := f.m["targets"]
	if !ok {
		return nil
	}
	n := deref(e.val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, w, "targets", "must be a list, such as [ubuntu@10.0.0.5, \"10.0.0.6:2222\"] (got %s)", kindName(n))
		return nil
	}
	if !p.visit(len(n.Content)) {
		return nil
	}
	var out []HostTarget
	seen := map[string]int{}
	for i, item := range n.Content {
		item = deref(item)
		field := fmt.Sprintf("targets[%d]", i)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			p.errorf(item.Line, w, field, "must be [user@]host[:port] (got %s)", kindName(item))
			continue
		}
		t, err := ParseHostTarget(item.Value, user, port)
		if err != nil {
			p.gotf(item.Line, w, field, item.Value, "%v", err)
			continue
		}
		t.Line = item.Line
		if first, dup := seen[t.String()]; dup {
			p.gotf(item.Line, w, field, item.Value, "same host as the target at line %d", first)
			continue
		}
		seen[t.String()] = item.Line
		out = append(out, t)
	}
	return out
}

// ParseHostTarget reads "[user@]host[:port]" (an IPv6 address in brackets
// when a port follows), filling in defaultUser and defaultPort. Errors say
// what is wrong without repeating the input.
func ParseHostTarget(s, defaultUser string, defaultPort int) (HostTarget, error) {
	t := HostTarget{User: defaultUser, Port: defaultPort}
	rest := s
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		t.User, rest = rest[:i], rest[i+1:]
		if !validUser(t.User) {
			return HostTarget{}, fmt.Errorf("invalid user before '@'")
		}
	}
	var port string
	switch {
	case strings.HasPrefix(rest, "["):
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return HostTarget{}, fmt.Errorf("unclosed '[' around an IPv6 address")
		}
		t.Addr, rest = rest[1:end], rest[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return HostTarget{}, fmt.Errorf("unexpected text after ']'")
			}
			port = rest[1:]
			if port == "" {
				return HostTarget{}, fmt.Errorf("empty port after ':'")
			}
		}
		if net.ParseIP(t.Addr) == nil || !strings.Contains(t.Addr, ":") {
			return HostTarget{}, fmt.Errorf("brackets hold an IPv6 address only")
		}
	case strings.Count(rest, ":") == 1:
		t.Addr, port, _ = strings.Cut(rest, ":")
		if port == "" {
			return HostTarget{}, fmt.Errorf("empty port after ':'")
		}
	case strings.Count(rest, ":") > 1:
		if net.ParseIP(rest) == nil {
			return HostTarget{}, fmt.Errorf("invalid host; write an IPv6 address with a port as [addr]:port")
		}
		t.Addr = rest
	default:
		t.Addr = rest
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return HostTarget{}, fmt.Errorf("port must be a number from 1 to 65535")
		}
		t.Port = n
	}
	switch {
	case t.Addr == "":
		return HostTarget{}, fmt.Errorf("no host")
	case !validHost(t.Addr):
		return HostTarget{}, fmt.Errorf("invalid host")
	case t.User == "":
		return HostTarget{}, fmt.Errorf("no user: write user@host or set hosts.user")
	}
	if t.Port == 0 {
		t.Port = DefaultHostPort
	}
	return t, nil
}

// validUser reports whether s can be a login name on the command line of
// ssh and in reports: no separators, no spaces, no control characters.
func validUser(s string) bool {
	if s == "" || len(s) > 64 || strings.HasPrefix(s, "-") {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(":/@[]\\\"'", r) {
			return false
		}
	}
	return true
}

// validHost reports whether s is an IP address or a DNS name.
func validHost(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if len(s) > 253 || strings.HasPrefix(s, "-") || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// checkAuthorizedKeysPath returns why s is not a file rotatord may edit, or "".
func checkAuthorizedKeysPath(s string) string {
	switch {
	case s == "":
		return "must not be empty; leave it out for .ssh/authorized_keys"
	case len(s) > maxAuthorizedKeysPathSize || strings.ContainsAny(s, "\n\r\x00"):
		return "must be a file path"
	case strings.HasSuffix(s, "/"):
		return "must name a file, not a directory"
	case slices.Contains(strings.Split(s, "/"), ".."):
		return "must not contain \"..\""
	case path.Clean(s) == "." || path.Clean(s) == "/":
		return "must name a file"
	}
	return ""
}

// discoverFits checks that a policy discovering its hosts is on an account
// whose machines are listed (with the provider's inventory: false nothing
// would ever be found) and knows the login user of a machine that does
// not say it (Gcore's never do; Sesterce's give sshUser).
func (p *parser) discoverFits(all []resolved, provs []Provider) {
	off := map[string]bool{}
	for _, pr := range provs {
		off[pr.Name] = pr.NoInventory
	}
	for _, r := range all {
		if r.Hosts == nil || !r.Hosts.Discover {
			continue
		}
		switch {
		case off[r.Provider]:
			p.errorf(r.Hosts.Line, r.w, "hosts.discover", "provider %q has inventory: false, so no machine would be discovered; drop discover or turn the inventory on", r.Provider)
		case r.ProviderType == TypeGcore && r.Hosts.User == "":
			p.errorf(r.Hosts.Line, r.w, "hosts.user", "required with discover on a %s provider: Gcore does not say which user logs in to an instance", TypeGcore)
		}
	}
}
