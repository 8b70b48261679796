// Package notify tells people in Slack what rotatord did. It posts one Block
// Kit message per Event, through a bot token (chat.postMessage) or an
// incoming webhook, and drains a durable outbox so that a Slack outage
// delays messages instead of losing them or blocking a rotation.
//
// The package knows nothing of rotatord's state store: it declares the small
// Outbox interface it needs and the daemon adapts bbolt to it.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"golang.org/x/time/rate"

	"github.com/rotatord/rotatord/internal/secret"
)

// Event is one thing that happened and that people should hear about. It
// describes keys by name, ID and fingerprint only: it never carries key
// material, and Blocks redacts anything PEM-shaped that slips into the free
// text fields anyway. The JSON tags are its stable form in the outbox.
type Event struct {
	// ID is the same for every copy of one event (Slack, each webhook) and
	// across delivery attempts, so a receiver can drop a repeat.
	ID        string `json:"id,omitempty"`
	Kind      string `json:"kind"` // one of the policy.Event constants
	Policy    string `json:"policy,omitempty"`
	Provider  string `json:"provider,omitempty"`
	ProjectID int64  `json:"project_id,omitempty"` // Gcore project; 0 when not applicable
	Channel   string `json:"channel,omitempty"`    // "" means Config.DefaultChannel

	KeyName        string `json:"key_name,omitempty"` // the new (or affected) key's name on the provider
	KeyID          string `json:"key_id,omitempty"`   // the new (or affected) key's provider ID
	OldKeyID       string `json:"old_key_id,omitempty"`
	OldFingerprint string `json:"old_fingerprint,omitempty"`
	NewFingerprint string `json:"new_fingerprint,omitempty"`
	VaultPath      string `json:"vault_path,omitempty"`

	GraceDeadline time.Time `json:"grace_deadline,omitzero"` // when the superseded key will be deleted
	Error         string    `json:"error,omitempty"`         // what went wrong, for failed, failing, reload_failed
	Detail        string    `json:"detail,omitempty"`        // free text: a report digest, a reconcile finding
	Time          time.Time `json:"time,omitzero"`           // when it happened
}

// Config configures the Slack notifier. Exactly one of Token and WebhookURL
// is set.
type Config struct {
	// Token is a bot token used with chat.postMessage.
	Token secret.Secret
	// WebhookURL is an incoming webhook. Its channel is fixed by the
	// webhook, so Event.Channel and DefaultChannel are ignored. The URL is
	// itself a credential: it never appears in errors or logs.
	WebhookURL secret.Secret
	// DefaultChannel receives events that name no channel (bot token mode).
	DefaultChannel string
	// APIURL overrides Slack's Web API base URL, for slacktest; "" means
	// Slack's own.
	APIURL string
	// HTTPClient is used for every request; nil means a fresh client.
	HTTPClient *http.Client
	// Logger receives debug records of sent messages; nil discards them.
	Logger *slog.Logger
	// Timeout bounds one Send, including any wait for the channel's rate
	// limiter; 0 means 10s.
	Timeout time.Duration
	// ChannelRate caps messages per second to one channel. Slack allows
	// about one per second per channel with short bursts, so pacing here
	// avoids earning 429s during a burst of rotations. 0 means 1;
	// rate.Inf turns the limiter off.
	ChannelRate rate.Limit
	// ChannelBurst is the burst the limiter allows; 0 means 3.
	ChannelBurst int
}

// Sentinels that classify a Send error; every error Send returns matches
// exactly one of them with errors.Is.
var (
	// ErrRetry: Slack is rate limiting, unavailable (5xx) or unreachable;
	// the same message may succeed later. RetryAfter says how long Slack
	// asked to wait, when it did.
	ErrRetry = errors.New("temporary failure")
	// ErrPermanent: Slack refused the message (channel_not_found,
	// invalid_auth, a 4xx from a webhook...): sending it again as is will
	// fail again until someone fixes the configuration.
	ErrPermanent = errors.New("permanent failure")
)

// Error is a failed Send. Its text never holds the token or the webhook URL.
type Error struct {
	Op         string        // "post message" or "post webhook"
	Channel    string        // the channel, in bot token mode
	RetryAfter time.Duration // what Slack asked for on a 429; 0 otherwise
	Class      error         // ErrRetry or ErrPermanent
	Err        error         // the cause, stripped of URLs in webhook mode
	msg        string        // the cause's text with credentials scrubbed
}

// Error reads "post message to #ops: channel_not_found".
func (e *Error) Error() string {
	if e.Channel != "" {
		return e.Op + " to " + e.Channel + ": " + e.msg
	}
	return e.Op + ": " + e.msg
}

// Unwrap exposes both the class sentinel and the cause to errors.Is/As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Class}
	}
	return []error{e.Class, e.Err}
}

// RetryAfter returns how long Slack asked the caller to wait before trying
// again (the Retry-After of a 429), or 0 when it did not say.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter
	}
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return rl.RetryAfter
	}
	return 0
}

// Slack posts events to Slack. It is safe for concurrent use and lives for
// the whole process.
type Slack struct {
	api            *slack.Client // nil in webhook mode
	token          secret.Secret
	webhookURL     secret.Secret
	defaultChannel string
	httpClient     *http.Client
	logger         *slog.Logger
	timeout        time.Duration
	rateLimit      rate.Limit
	rateBurst      int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter // per channel; "" is the webhook's
}

// New checks cfg and returns a notifier. It makes no network call: a Slack
// outage at start-up must not stop the daemon.
func New(cfg Config) (*Slack, error) {
	switch {
	case cfg.Token.Empty() && cfg.WebhookURL.Empty():
		return nil, errors.New("new slack notifier: need a bot token or a webhook URL")
	case !cfg.Token.Empty() && !cfg.WebhookURL.Empty():
		return nil, errors.New("new slack notifier: bot token and webhook URL are mutually exclusive")
	}
	if !cfg.WebhookURL.Empty() {
		// The parse error would quote the URL, which is a credential:
		// report only what is wrong with it.
		u, err := url.Parse(cfg.WebhookURL.Reveal())
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("new slack notifier: webhook URL is not an http(s) URL")
		}
	}
	s := &Slack{
		token:          cfg.Token,
		webhookURL:     cfg.WebhookURL,
		defaultChannel: cfg.DefaultChannel,
		httpClient:     cfg.HTTPClient,
		logger:         cfg.Logger,
		timeout:        cfg.Timeout,
		rateLimit:      cfg.ChannelRate,
		rateBurst:      cfg.ChannelBurst,
		limiters:       map[string]*rate.Limiter{},
	}
	if s.httpClient == nil {
		s.httpClient = &http.Client{}
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	if s.rateLimit == 0 {
		s.rateLimit = 1
	}
	if s.rateBurst <= 0 {
		s.rateBurst = 3
	}
	if !cfg.Token.Empty() {
		// No slack.OptionRetry: the Dispatcher owns retries, with state
		// that survives a restart.
		opts := []slack.Option{slack.OptionHTTPClient(s.httpClient)}
		if cfg.APIURL != "" {
			api := cfg.APIURL
			if !strings.HasSuffix(api, "/") {
				api += "/"
			}
			opts = append(opts, slack.OptionAPIURL(api))
		}
		s.api = slack.New(cfg.Token.Reveal(), opts...)
	}
	return s, nil
}

// Send posts ev as one message. Errors are *Error values classified as
// ErrRetry (429, 5xx, network) or ErrPermanent (everything Slack refuses).
// A message may be delivered and still reported as failed when the answer is
// lost (timeout): delivery through the outbox is at least once.
func (s *Slack) Send(ctx context.Context, ev Event) error {
	op, channel := "post message", ev.Channel
	if s.api == nil {
		op, channel = "post webhook", ""
	} else if channel == "" {
		channel = s.defaultChannel
		if channel == "" {
			return &Error{Op: op, Class: ErrPermanent, msg: "no channel: the event names none and no default channel is set"}
		}
	}

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.wait(ctx, channel); err != nil {
		return s.classify(op, channel, err)
	}

	text, blocks := Blocks(ev)
	var err error
	if s.api != nil {
		_, _, err = s.api.PostMessageContext(ctx, channel,
			slack.MsgOptionText(text, false),
			slack.MsgOptionBlocks(blocks...),
			slack.MsgOptionDisableLinkUnfurl(),
		)
	} else {
		err = slack.PostWebhookCustomHTTPContext(ctx, s.webhookURL.Reveal(), s.httpClient, &slack.WebhookMessage{
			Text:   text,
			Blocks: &slack.Blocks{BlockSet: blocks},
		})
	}
	if err != nil {
		return s.classify(op, channel, err)
	}
	s.logger.DebugContext(ctx, "slack message sent", "kind", ev.Kind, "policy", ev.Policy, "channel", channel)
	return nil
}

// rateLimitedError is the limiter saying the channel is busy for longer
// than this Send may wait.
type rateLimitedError struct{ after time.Duration }

func (e *rateLimitedError) Error() string {
	return fmt.Sprintf("channel rate limit: next slot in %s", e.after.Round(time.Millisecond))
}

// wait takes a slot from the channel's limiter, or gives it back and says
// how long to wait when the slot lies beyond ctx's deadline.
func (s *Slack) wait(ctx context.Context, channel string) error {
	if s.rateLimit == rate.Inf {
		return nil
	}
	s.mu.Lock()
	lim, ok := s.limiters[channel]
	if !ok {
		lim = rate.NewLimiter(s.rateLimit, s.rateBurst)
		s.limiters[channel] = lim
	}
	s.mu.Unlock()

	r := lim.Reserve()
	delay := r.Delay()
	if delay == 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < delay {
		r.Cancel()
		return &rateLimitedError{after: delay}
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// retryableAPIErrors are chat.postMessage error codes that describe Slack's
// condition rather than the request's.
var retryableAPIErrors = map[string]bool{
	"ratelimited":         true,
	"rate_limited":        true,
	"service_unavailable": true,
	"fatal_error":         true,
	"internal_error":      true,
	"request_timeout":     true,
	"team_added_to_org":   true,
}

// classify turns a slack-go error into an *Error with its class, and strips
// the webhook URL (which *url.Error quotes) from the cause.
func (s *Slack) classify(op, channel string, err error) error {
	if !s.webhookURL.Empty() {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
	}
	e := &Error{Op: op, Channel: channel, Class: ErrRetry, Err: err, msg: s.scrub(err.Error())}

	var (
		rl     *slack.RateLimitedError
		status slack.StatusCodeError
		apiErr slack.SlackErrorResponse
		mine   *rateLimitedError
		netErr net.Error
	)
	switch {
	case errors.As(err, &rl):
		e.RetryAfter = rl.RetryAfter
	case errors.As(err, &mine):
		e.RetryAfter = mine.after
	case errors.As(err, &status):
		if !status.Retryable() {
			e.Class = ErrPermanent
		}
	case errors.As(err, &apiErr):
		if !retryableAPIErrors[apiErr.Err] {
			e.Class = ErrPermanent
		}
	case errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Network trouble and timeouts: Slack may be fine in a minute.
	default:
		// Anything else (a garbled answer, an unparsable Retry-After) is
		// more likely Slack's passing trouble than a bad message.
	}
	return e
}

// scrub removes credentials from text that came out of the HTTP stack, as a
// second line of defence behind classify.
func (s *Slack) scrub(msg string) string {
	for _, sec := range []secret.Secret{s.token, s.webhookURL} {
		if !sec.Empty() {
			msg = strings.ReplaceAll(msg, sec.Reveal(), secret.Redacted)
		}
	}
	if !s.webhookURL.Empty() {
		if u, err := url.Parse(s.webhookURL.Reveal()); err == nil && len(u.Path) > 1 {
			msg = strings.ReplaceAll(msg, u.Path, "/"+secret.Redacted)
		}
	}
	return msg
}
