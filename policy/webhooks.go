package policy

import (
	"fmt"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// WebhookEvents lists every event a webhook may subscribe to, in the order
// of its default events list: the policy events and the daemon's
// reload_failed and leader_changed (the digest, EventReport, is Slack's
// alone).
func WebhookEvents() []string { return append(Events(), EventReloadFailed, EventLeaderChanged) }

// Webhook is one receiver of rotatord's events, each POSTed as a CloudEvents
// 1.0 JSON document signed with an HMAC of its body. The URL and the
// signing secret are credentials: the config holds only where to read them
// (exactly one of URLEnv and URLFile, and of SecretEnv and SecretFile).
//
// The URL is known only when the daemon reads it, so the rule that an
// http:// URL must point to a loopback host unless Insecure is set is
// enforced there (notify.NewWebhook), not by Parse.
type Webhook struct {
	// Name identifies the webhook in logs, errors and its outbox. Default:
	// the url_env variable's name, else the url_file's base name. Unique.
	Name       string
	URLEnv     string
	URLFile    string
	SecretEnv  string
	SecretFile string
	// Events the webhook receives; default WebhookEvents().
	Events []string
	// Insecure allows an http:// URL to a host other than loopback.
	Insecure bool
	Line     int // line in the config file, for messages
}

// Wants reports whether the webhook subscribes to event.
func (w Webhook) Wants(event string) bool {
	for _, e := range w.Events {
		if e == event {
			return true
		}
	}
	return false
}

// reservedSinkName is the outbox sink of Slack (state.SinkSlack), which no
// webhook may share.
const reservedSinkName = "slack"

var webhookKeys = []string{"name", "url_env", "url_file", "secret_env", "secret_file", "events", "insecure"}

// webhooks reads the top-level webhooks list.
func (p *parser) webhooks(top fields) []Webhook {
	items, ok := p.items(top, "webhooks", "webhook")
	if !ok || len(items) == 0 {
		return nil
	}
	var out []Webhook
	first := map[string]int{}
	for _, it := range items {
		if it.n.Kind != yaml.MappingNode {
			p.errorf(it.n.Line, where{}, "webhooks", "each webhook must be a mapping of keys to values (got %s)", kindName(it.n))
			continue
		}
		f, _ := p.mapping(it.n, it.w, "", webhookKeys)
		w := it.w
		wh := Webhook{Line: it.n.Line}

		urlRefs := []string{"url_env", "url_file"}
		urls := []val[string]{p.envRef(f, w, urlRefs[0]), p.fileRef(f, w, urlRefs[1])}
		p.oneOf(f, w, urlRefs, urls)
		wh.URLEnv, wh.URLFile = urls[0].v, urls[1].v
		secretRefs := []string{"secret_env", "secret_file"}
		secrets := []val[string]{p.envRef(f, w, secretRefs[0]), p.fileRef(f, w, secretRefs[1])}
		p.oneOf(f, w, secretRefs, secrets)
		wh.SecretEnv, wh.SecretFile = secrets[0].v, secrets[1].v

		ev := p.webhookEvents(f, w)
		switch {
		case ev.set && len(ev.v) == 0:
			p.errorf(ev.line, w, "events", "must name at least one event; leave it out for every event")
		case ev.set:
			wh.Events = ev.v
		case !ev.bad:
			wh.Events = WebhookEvents()
		}
		wh.Insecure = p.boolean(f, w, "insecure").v

		name := p.str(f, w, "name")
		nameLine := name.line
		switch {
		case name.set && !nameChars(name.v):
			p.gotf(name.line, w, "name", name.raw, "must use only letters, digits, '.', '_' and '-'")
		case name.set:
			wh.Name = name.v
		case wh.URLEnv != "":
			wh.Name, nameLine = wh.URLEnv, urls[0].line
		case wh.URLFile != "":
			wh.Name, nameLine = fileName(wh.URLFile), urls[1].line
		}
		if wh.Name == reservedSinkName {
			// Each webhook has an outbox of its own under its name, next
			// to Slack's.
			p.errorf(nameLine, w, "name", "%s is reserved for the Slack notifications' outbox; name the webhook otherwise", reservedSinkName)
			wh.Name = ""
		}
		if wh.Name != "" {
			if line, dup := first[wh.Name]; dup {
				if name.set {
					p.gotf(nameLine, w, "name", name.raw, "already used by the webhook at line %d", line)
				} else {
					p.errorf(nameLine, w, "name", "the webhook at line %d is also called %s; set distinct names", line, wh.Name)
				}
			} else {
				first[wh.Name] = wh.Line
			}
		}
		out = append(out, wh)
	}
	return out
}

// fileName is a name for a webhook whose URL is read from path: its base
// name without extension, with characters names do not allow made '-'.
func fileName(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	b := []byte(base)
	for i, c := range b {
		if !nameChars(string(c)) {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "webhook"
	}
	return string(b)
}

// webhookEvents reads a webhook's events: like notify.on, with the
// daemon-wide events allowed too.
func (p *parser) webhookEvents(f fields, w where) val[[]string] {
	e, ok := f.m["events"]
	if !ok {
		return val[[]string]{}
	}
	n := deref(e.val)
	if isNull(n) {
		return val[[]string]{}
	}
	s := src{line: n.Line}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, w, "events", "must be a list, such as [%s, %s] (got %s)", EventRotated, EventDeleted, kindName(n))
		s.bad = true
		return val[[]string]{src: s}
	}
	if !p.visit(len(n.Content)) {
		s.bad = true
		return val[[]string]{src: s}
	}
	list := []string{}
	for _, item := range n.Content {
		item = deref(item)
		switch {
		case item.Kind != yaml.ScalarNode || isNull(item):
			p.errorf(item.Line, w, "events", "list items must be event names (got %s)", kindName(item))
			s.bad = true
		case !contains(WebhookEvents(), item.Value):
			p.gotf(item.Line, w, "events", item.Value, "unknown event; events are %s", quoteList(WebhookEvents()...))
			s.bad = true
		case !contains(list, item.Value):
			list = append(list, item.Value)
		}
	}
	s.set = !s.bad
	return val[[]string]{v: list, src: s}
}

// String names the webhook and where its URL comes from, never the URL.
func (w Webhook) String() string {
	from := "url_env " + w.URLEnv
	if w.URLFile != "" {
		from = "url_file " + w.URLFile
	}
	return fmt.Sprintf("webhook %q (%s)", w.Name, from)
}
