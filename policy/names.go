package policy

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// KeyNameLayout is the UTC timestamp that ends every managed key's name:
// <name_prefix>-<KeyNameLayout>. The name is deterministic so that a key
// uploaded before a crash or an ambiguous timeout is found again by name.
const KeyNameLayout = "20060102T150405"

// Both providers cap key names at 255 characters; the prefix has to leave
// room for "-" and the timestamp.
const (
	maxKeyName    = 255
	maxNamePrefix = maxKeyName - 1 - len(KeyNameLayout)
)

// KeyName is the provider-side name of the policy's key created at t.
func (p Policy) KeyName(t time.Time) string {
	return p.NamePrefix + "-" + t.UTC().Format(KeyNameLayout)
}

// OwnsKeyName reports whether name is one KeyName makes for this policy:
// <name_prefix>-<yyyymmddThhmmss>, exactly. "gpu" does not own
// "gpu-team-20260101T000000". The rotation engine (orphans) and the report
// (orphaned vs unmanaged) both decide with it; it runs for every key a
// provider lists, so it is spelled out rather than a regexp.
func (p Policy) OwnsKeyName(name string) bool {
	const stamp = "00000000T000000" // the shape of KeyNameLayout
	prefix := p.NamePrefix
	if len(name) != len(prefix)+1+len(stamp) || name[:len(prefix)] != prefix || name[len(prefix)] != '-' {
		return false
	}
	for i, c := range []byte(name[len(prefix)+1:]) {
		if stamp[i] == 'T' {
			if c != 'T' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Events lists every notification event, in the order of the default
// notify.on.
func Events() []string {
	return []string{EventRotated, EventDeleted, EventFailed, EventOverdue, EventFailing, EventRecovered, EventExposed,
		EventHostUpdated, EventHostUnreachable, EventHostKeyChanged}
}

// nameChars reports whether s uses only the characters that are safe in
// key names, Vault fields, metric labels and command lines alike.
func nameChars(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return s != ""
}

// envName reports whether s can be an environment variable's name. A value
// that is not is most often the secret itself pasted in the wrong place,
// so messages about it never repeat it.
func envName(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// checkURL returns why s is not a usable http(s) base URL, or "".
func checkURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "must start with https:// or http://"
	case u.Host == "" || u.Hostname() == "":
		return "has no host"
	case u.RawQuery != "" || u.Fragment != "":
		return "must not have a query or fragment"
	}
	return ""
}

// hasUserinfo reports whether s carries credentials (https://user:pw@host),
// which would put a secret in the config.
func hasUserinfo(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.User != nil
}

// checkListen returns why s is not a host:port to listen on, or "".
func checkListen(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "must be host:port, such as 127.0.0.1:9464"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "port must be a number from 1 to 65535"
	}
	if strings.ContainsAny(host, " /") {
		return "invalid host"
	}
	return ""
}

// checkVaultPath returns why s is not a usable KV path below the mount, or
// "".
func checkVaultPath(s string) string {
	switch {
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/"):
		return "must not start or end with /; it is relative to the mount"
	case strings.HasSuffix(s, "/pending"):
		return "must not end in /pending; rotatord keeps the in-flight key at <vault_path>/pending"
	}
	for _, seg := range strings.Split(s, "/") {
		switch seg {
		case "":
			return "has an empty segment (//)"
		case ".", "..":
			return fmt.Sprintf("must not contain %q segments", seg)
		}
	}
	return ""
}
