package policy

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// State backends.
const (
	BackendBolt = "bbolt"
	BackendEtcd = "etcd"
)

// Defaults of the etcd backend.
const (
	DefaultEtcdPrefix   = "/rotatord/"
	DefaultEtcdLeaseTTL = 10 * time.Second
	// etcd refuses leases much shorter than its election timeout (1s by
	// default); a lease as long as minutes leaves keys unrotated that long
	// when the leader dies.
	minEtcdLeaseTTL = 2 * time.Second
	maxEtcdLeaseTTL = 5 * time.Minute
)

// StateConfig says where the state lives: a bbolt file (the default) or
// etcd, which several rotatord processes share with one of them leading.
type StateConfig struct {
	Backend string // BackendBolt (default) or BackendEtcd
	Path    string // bbolt file, default /var/lib/rotatord/state.db
	Etcd    *EtcdConfig
}

// EtcdConfig locates the etcd cluster. Credentials are references only.
type EtcdConfig struct {
	Endpoints    []string // http(s)://host:port
	Prefix       string   // every key rotatord writes is under it; default /rotatord/
	UsernameEnv  string   // optional; with PasswordEnv or PasswordFile
	PasswordEnv  string
	PasswordFile string
	TLS          EtcdTLS
	// LeaseTTL is how long a silent leader keeps leadership.
	LeaseTTL time.Duration
}

// EtcdTLS are the files of a TLS connection to etcd; all optional.
type EtcdTLS struct {
	CAFile, CertFile, KeyFile string
}

// Equal reports whether two state settings are the same (a reload
// compares them: the state is opened once per process).
func (s StateConfig) Equal(o StateConfig) bool {
	if s.Backend != o.Backend || s.Path != o.Path || (s.Etcd == nil) != (o.Etcd == nil) {
		return false
	}
	if s.Etcd == nil {
		return true
	}
	a, b := *s.Etcd, *o.Etcd
	return slices.Equal(a.Endpoints, b.Endpoints) && a.Prefix == b.Prefix && a.UsernameEnv == b.UsernameEnv &&
		a.PasswordEnv == b.PasswordEnv && a.PasswordFile == b.PasswordFile && a.TLS == b.TLS && a.LeaseTTL == b.LeaseTTL
}

var (
	stateKeys   = []string{"backend", "path", "etcd"}
	etcdKeys    = []string{"endpoints", "prefix", "username_env", "password_env", "password_file", "tls", "lease_ttl"}
	etcdTLSKeys = []string{"ca_file", "cert_file", "key_file"}
)

func (p *parser) state(top fields) StateConfig {
	sc := StateConfig{Backend: BackendBolt, Path: DefaultStatePath}
	f, ok := p.section(top, "state", stateKeys)
	if !ok {
		return sc
	}
	w := where{path: "state."}
	if v := p.str(f, w, "backend"); v.set {
		if v.v != BackendBolt && v.v != BackendEtcd {
			p.gotf(v.line, w, "backend", v.raw, "must be %s", quoteList(BackendBolt, BackendEtcd))
		} else {
			sc.Backend = v.v
		}
	}
	path := p.str(f, w, "path")
	switch {
	case path.set && sc.Backend == BackendEtcd:
		p.gotf(path.line, w, "path", path.raw, "only used with backend %s (backend is %s)", BackendBolt, BackendEtcd)
	case path.set && path.v == "":
		p.errorf(path.line, w, "path", "must not be empty; leave it out for %s", DefaultStatePath)
	case path.set:
		sc.Path = path.v
	}
	e, present := f.m["etcd"]
	switch {
	case sc.Backend == BackendEtcd:
		sc.Path = ""
		if !present || isNull(deref(e.val)) {
			p.errorf(f.line, w, "etcd", "required with backend %s: at least its endpoints", BackendEtcd)
			return sc
		}
		sc.Etcd = p.etcd(e.val, w)
	case present:
		p.errorf(e.key.Line, w, "etcd", "only used with backend %s; add backend: %s, or leave etcd out", BackendEtcd, BackendEtcd)
	}
	return sc
}

func (p *parser) etcd(n *yaml.Node, sw where) *EtcdConfig {
	ec := &EtcdConfig{Prefix: DefaultEtcdPrefix, LeaseTTL: DefaultEtcdLeaseTTL}
	f, ok := p.mapping(n, sw, "etcd", etcdKeys)
	if !ok {
		return ec
	}
	w := sw.in("etcd")
	ec.Endpoints = p.endpoints(f, w)
	if v := p.str(f, w, "prefix"); v.set {
		if !strings.HasPrefix(v.v, "/") || !strings.HasSuffix(v.v, "/") || len(v.v) < 3 {
			p.gotf(v.line, w, "prefix", v.raw, "must start and end with / and name something, such as %s", DefaultEtcdPrefix)
		} else {
			ec.Prefix = v.v
		}
	}
	user := p.envRef(f, w, "username_env")
	pwEnv := p.envRef(f, w, "password_env")
	pwFile := p.fileRef(f, w, "password_file")
	ec.UsernameEnv, ec.PasswordEnv, ec.PasswordFile = user.v, pwEnv.v, pwFile.v
	switch {
	case pwEnv.set && pwFile.set:
		p.errorf(max(pwEnv.line, pwFile.line), w, "password_file", "set password_env or password_file, not both")
	case user.set && !pwEnv.set && !pwFile.set && !pwEnv.bad && !pwFile.bad:
		p.errorf(user.line, w, "username_env", "needs password_env or password_file")
	case !user.set && !user.bad && (pwEnv.set || pwFile.set):
		p.errorf(max(pwEnv.line, pwFile.line), w, "username_env", "required with a password")
	}
	if tf, ok := p.mapping(f.m["tls"].val, w, "tls", etcdTLSKeys); ok {
		tw := w.in("tls")
		ca, cert, key := p.fileRef(tf, tw, "ca_file"), p.fileRef(tf, tw, "cert_file"), p.fileRef(tf, tw, "key_file")
		ec.TLS = EtcdTLS{CAFile: ca.v, CertFile: cert.v, KeyFile: key.v}
		switch {
		case cert.set && !key.set && !key.bad:
			p.errorf(cert.line, tw, "key_file", "required with cert_file (a client certificate needs its key)")
		case key.set && !cert.set && !cert.bad:
			p.errorf(key.line, tw, "cert_file", "required with key_file")
		}
	}
	if v := p.duration(f, w, "lease_ttl"); v.set {
		if v.v < minEtcdLeaseTTL || v.v > maxEtcdLeaseTTL {
			p.gotf(v.line, w, "lease_ttl", v.raw, "must be from %s to %s: how long a silent leader keeps leading", formatDuration(minEtcdLeaseTTL), formatDuration(maxEtcdLeaseTTL))
		} else {
			ec.LeaseTTL = v.v
		}
	}
	return ec
}

// endpoints reads the list of etcd endpoints: http(s)://host:port each,
// with no credentials in them.
func (p *parser) endpoints(f fields, w where) []string {
	e, ok := f.m["endpoints"]
	n := deref(e.val)
	if !ok || isNull(n) {
		p.errorf(f.line, w, "endpoints", "required: the cluster's client URLs, such as [https://10.0.0.1:2379]")
		return nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.errorf(n.Line, w, "endpoints", "must be a list of client URLs, such as [https://10.0.0.1:2379] (got %s)", kindName(n))
		return nil
	}
	if !p.visit(len(n.Content)) {
		return nil
	}
	var out []string
	for _, item := range n.Content {
		item = deref(item)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			p.errorf(item.Line, w, "endpoints", "list items must be URLs (got %s)", kindName(item))
			continue
		}
		u, err := url.Parse(item.Value)
		switch {
		case err == nil && u.User != nil:
			p.errorf(item.Line, w, "endpoints", "must not carry credentials; use username_env with password_env or password_file")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "":
			p.gotf(item.Line, w, "endpoints", item.Value, "must be http(s)://host:port")
		case u.Path != "" && u.Path != "/":
			p.gotf(item.Line, w, "endpoints", item.Value, "must not have a path")
		default:
			out = append(out, strings.TrimRight(item.Value, "/"))
		}
	}
	return out
}
