package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/rotatord/rotatord/internal/secret"
)

// Webhook delivery: each event is one CloudEvents 1.0 document in
// structured mode, POSTed with these headers.
const (
	// ContentTypeCloudEvents is the Content-Type of a structured-mode
	// CloudEvents JSON document.
	ContentTypeCloudEvents = "application/cloudevents+json"
	// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the
	// exact body bytes, keyed by the webhook's secret.
	SignatureHeader = "X-Rotatord-Signature"
	// EventTypePrefix starts every CloudEvents type: io.rotatord.rotated.
	EventTypePrefix = "io.rotatord."
)

// WebhookConfig configures one webhook receiver.
type WebhookConfig struct {
	// Name identifies the webhook in errors and logs (policy.Webhook.Name).
	Name string
	// URL is where events are POSTed. It is a credential (it may carry a
	// token in its path or query): it never appears in errors or logs. It
	// must be https://, or http:// to a loopback host unless Insecure.
	URL secret.Secret
	// Secret keys the HMAC of every body; required.
	Secret secret.Secret
	// Events are the kinds sent; others are skipped without a request.
	// Empty means every kind.
	Events []string
	// Insecure allows http:// to a host other than loopback.
	Insecure bool
	// Source is the CloudEvents source of every event; "" means
	// "rotatord/<hostname>".
	Source string
	// UserAgent is sent with every request; "" means "rotatord".
	UserAgent string
	// HTTPClient sends the requests; nil means a fresh client. Redirects
	// are never followed: a POST that is redirected arrives as a GET, so a
	// 3xx is a permanent failure that asks for the final URL.
	HTTPClient *http.Client
	// Logger receives a debug record per delivered event; nil discards.
	Logger *slog.Logger
	// Timeout bounds one Send; 0 means 10s.
	Timeout time.Duration
}

// Webhook sends events to an HTTP receiver as signed CloudEvents. It is a
// Sender, so a Dispatcher over the webhook's own outbox retries it exactly
// as it retries Slack, and honours its 429s. It is safe for concurrent use.
type Webhook struct {
	name      string
	url       secret.Secret
	key       secret.Secret
	events    []string
	source    string
	userAgent string
	client    *http.Client
	log       *slog.Logger
	timeout   time.Duration
	// redact are the parts of the URL that may be a token, longest first.
	redact []string
}

var _ Sender = (*Webhook)(nil)

// NewWebhook checks cfg and returns a Webhook. It makes no request. Its
// errors name the webhook and what is wrong with the URL, never the URL.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	name := cfg.Name
	if name == "" {
		name = "webhook"
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("new webhook %s: "+format, append([]any{name}, args...)...)
	}
	if cfg.Secret.Empty() {
		return nil, fail("no signing secret")
	}
	if cfg.URL.Empty() {
		return nil, fail("no URL")
	}
	if why := checkWebhookURL(cfg.URL.Reveal(), cfg.Insecure); why != "" {
		return nil, fail("URL %s", why)
	}
	w := &Webhook{
		name: name, url: cfg.URL, key: cfg.Secret, events: slices.Clone(cfg.Events),
		source: cfg.Source, userAgent: cfg.UserAgent, log: cfg.Logger, timeout: cfg.Timeout,
	}
	if w.source == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		w.source = "rotatord/" + host
	}
	if w.userAgent == "" {
		w.userAgent = "rotatord"
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.timeout <= 0 {
		w.timeout = 10 * time.Second
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{}
	}
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	w.client = &c
	w.redact = urlParts(cfg.URL.Reveal())
	return w, nil
}

// checkWebhookURL returns what is wrong with raw as a webhook URL, or "".
// The answer never quotes raw: it may hold a token.
func checkWebhookURL(raw string, insecure bool) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "is not a URL"
	case u.Scheme != "https" && u.Scheme != "http":
		return "must start with https:// (or http:// to a loopback host)"
	case u.Hostname() == "":
		return "has no host"
	case u.Scheme == "http" && !insecure && !loopback(u.Hostname()):
		return "is http:// to a host other than loopback, which would send every event and its signature in clear; use https:// or set insecure: true"
	}
	return ""
}

// loopback reports whether host names this machine without a DNS lookup:
// localhost, 127.0.0.0/8 or ::1.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// urlParts lists the pieces of a webhook URL that may carry its token, so
// that an error quoting any of them can be scrubbed: the whole URL, its
// path, its query and each of its path segments and query values that is
// long enough not to be an ordinary word.
func urlParts(raw string) []string {
	parts := []string{raw}
	if u, err := url.Parse(raw); err == nil {
		parts = append(parts, u.RawQuery, u.EscapedPath(), u.Path)
		if u.User != nil {
			parts = append(parts, u.User.String())
		}
		parts = append(parts, strings.Split(u.Path, "/")...)
		for _, vs := range u.Query() {
			parts = append(parts, vs...)
		}
	}
	var out []string
	for _, p := range parts {
		if len(p) >= 8 && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// Name returns the webhook's name.
func (w *Webhook) Name() string { return w.name }

// Wants reports whether the webhook sends events of kind.
func (w *Webhook) Wants(kind string) bool {
	return len(w.events) == 0 || slices.Contains(w.events, kind)
}

// cloudEvent is the structured-mode CloudEvents 1.0 document a webhook
// POSTs.
type cloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	Type            string    `json:"type"`
	Source          string    `json:"source"`
	ID              string    `json:"id"`
	Time            time.Time `json:"time,omitzero"`
	Subject         string    `json:"subject,omitempty"`
	DataContentType string    `json:"datacontenttype"`
	Data            eventData `json:"data"`
}

// eventData is the public facts of an event: names, IDs, fingerprints,
// the Vault path. It has no field for key material or credentials, and
// its free text is redacted like a Slack message's.
type eventData struct {
	Kind           string    `json:"kind"`
	Policy         string    `json:"policy,omitempty"`
	Provider       string    `json:"provider,omitempty"`
	ProjectID      int64     `json:"project_id,omitempty"`
	KeyName        string    `json:"key_name,omitempty"`
	KeyID          string    `json:"key_id,omitempty"`
	OldKeyID       string    `json:"old_key_id,omitempty"`
	OldFingerprint string    `json:"old_fingerprint,omitempty"`
	NewFingerprint string    `json:"new_fingerprint,omitempty"`
	VaultPath      string    `json:"vault_path,omitempty"`
	GraceDeadline  time.Time `json:"grace_deadline,omitzero"`
	Error          string    `json:"error,omitempty"`
	Detail         string    `json:"detail,omitempty"`
}

// EventID is the CloudEvents id of ev: the first 16 bytes of the SHA-256
// of its JSON as stored, in hex. The outbox keeps an event's bytes as they
// were queued, ev.ID included, so every retry of it, before or after a
// restart, and every webhook it goes to, carries the same id; receivers
// deduplicate on it. ev.ID alone ("ev-N") is not used: it counts from 1
// again in a new state file, and CloudEvents wants source and id unique
// for each distinct event, so a receiver that remembers ids would drop the
// first events after a state reset.
func EventID(ev Event) string {
	b, _ := json.Marshal(ev) // a struct of strings, ints and times cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// body returns the exact bytes Send POSTs for ev.
func (w *Webhook) body(ev Event) ([]byte, error) {
	id := EventID(ev)
	ev = redactEvent(ev)
	ce := cloudEvent{
		SpecVersion: "1.0", Type: EventTypePrefix + ev.Kind, Source: w.source, ID: id,
		Time: ev.Time.UTC(), Subject: ev.Policy, DataContentType: "application/json",
		Data: eventData{
			Kind: ev.Kind, Policy: ev.Policy, Provider: ev.Provider, ProjectID: ev.ProjectID,
			KeyName: ev.KeyName, KeyID: ev.KeyID, OldKeyID: ev.OldKeyID,
			OldFingerprint: ev.OldFingerprint, NewFingerprint: ev.NewFingerprint, VaultPath: ev.VaultPath,
			GraceDeadline: ev.GraceDeadline.UTC(), Error: ev.Error, Detail: ev.Detail,
		},
	}
	if ev.Time.IsZero() {
		ce.Time = time.Time{}
	}
	if ev.GraceDeadline.IsZero() {
		ce.Data.GraceDeadline = time.Time{}
	}
	b, err := json.Marshal(ce)
	if err != nil {
		return nil, fmt.Errorf("encode cloudevent: %w", err)
	}
	return b, nil
}

// Sign returns the X-Rotatord-Signature value of body under key:
// "sha256=" and the hex HMAC-SHA256 of the exact bytes.
func Sign(key secret.Secret, body []byte) string {
	m := hmac.New(sha256.New, []byte(key.Reveal()))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Send POSTs ev as one signed CloudEvent. Errors are *Error values
// classified like Slack's: ErrRetry for a 429 (RetryAfter from its
// Retry-After), 408, a 5xx or a network failure; ErrPermanent for any
// other answer. An event of a kind the webhook does not want is skipped
// and reported delivered. Delivery through the outbox is at least once;
// the id lets the receiver drop repeats.
func (w *Webhook) Send(ctx context.Context, ev Event) error {
	if !w.Wants(ev.Kind) {
		return nil
	}
	body, err := w.body(ev)
	if err != nil {
		return &Error{Op: w.op(), Class: ErrPermanent, Err: err, msg: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url.Reveal(), bytes.NewReader(body))
	if err != nil {
		return w.fail(ErrPermanent, 0, err)
	}
	req.Header.Set("Content-Type", ContentTypeCloudEvents)
	req.Header.Set(SignatureHeader, Sign(w.key, body))
	req.Header.Set("User-Agent", w.userAgent)
	resp, err := w.client.Do(req)
	if err != nil {
		return w.fail(ErrRetry, 0, err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		w.log.DebugContext(ctx, "webhook delivered", "webhook", w.name, "kind", ev.Kind, "policy", ev.Policy, "event_id", EventID(ev), "status", code)
		return nil
	case code == http.StatusTooManyRequests:
		return w.fail(ErrRetry, retryAfter(resp.Header.Get("Retry-After"), time.Now()), statusError(resp, snippet))
	case code == http.StatusRequestTimeout || code >= 500:
		return w.fail(ErrRetry, 0, statusError(resp, snippet))
	default:
		return w.fail(ErrPermanent, 0, statusError(resp, snippet))
	}
}

func (w *Webhook) op() string { return "post webhook " + w.name }

// fail builds the *Error of a failed Send, with the URL stripped from the
// cause (*url.Error quotes it) and scrubbed from the text.
func (w *Webhook) fail(class error, after time.Duration, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return &Error{Op: w.op(), Class: class, RetryAfter: after, Err: err, msg: w.scrub(err.Error())}
}

// scrub removes the URL, its secret-looking parts and the signing secret
// from text that came out of the HTTP stack or the receiver.
func (w *Webhook) scrub(msg string) string {
	if k := w.key.Reveal(); len(k) >= 4 {
		msg = strings.ReplaceAll(msg, k, secret.Redacted)
	}
	for _, p := range w.redact {
		msg = strings.ReplaceAll(msg, p, secret.Redacted)
	}
	return msg
}

// statusError is a receiver's refusal: its status and the start of its
// answer, printable characters only.
func statusError(resp *http.Response, body []byte) error {
	text := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, string(body))
	text = strings.Join(strings.Fields(text), " ")
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	if text == "" {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return fmt.Errorf("receiver answered %s: %s", resp.Status, text)
}

// maxRetryAfter caps a receiver's Retry-After, in seconds: a day.
const maxRetryAfter = 24 * 60 * 60

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// An absent or unreadable value is 0 (the dispatcher's backoff applies).
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		// Capped so that a huge value cannot overflow.
		return time.Duration(min(max(s, 0), maxRetryAfter)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter*time.Second)
	}
	return 0
}
