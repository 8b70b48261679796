package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/policy"
)

// rotatedEvent is a typical successful rotation of a Sesterce policy.
func rotatedEvent() Event {
	return Event{
		Kind:           policy.EventRotated,
		Policy:         "gpu-team",
		Provider:       "sesterce-prod",
		Channel:        "#gpu-ops",
		KeyName:        "gpu-team-20250301T030000",
		KeyID:          "65f1c0ffee0000000000beef",
		OldKeyID:       "65f1c0ffee0000000000dead",
		OldFingerprint: "SHA256:oldOLDoldOLDoldOLDoldOLDoldOLDoldOLDold",
		NewFingerprint: "SHA256:newNEWnewNEWnewNEWnewNEWnewNEWnewNEWnew",
		VaultPath:      "ssh/sesterce/gpu-team",
		GraceDeadline:  t0.Add(7 * 24 * time.Hour),
		Time:           t0,
	}
}

func TestSlack_Send(t *testing.T) {
	f := newFakeSlack(t)
	s := newBot(t, f, nil)

	with := func(mod func(*Event)) Event {
		ev := rotatedEvent()
		mod(&ev)
		return ev
	}
	tests := []struct {
		name        string
		ev          Event
		wantChannel string
		want        []string // substrings of the rendered blocks
		wantText    []string // substrings of the fallback text
	}{
		{
			name:        "rotated to the policy channel",
			ev:          rotatedEvent(),
			wantChannel: "#gpu-ops",
			want: []string{
				":key: gpu-team rotated",
				"*Policy*\n`gpu-team`",
				"*Provider*\nsesterce-prod",
				"*Key name*\n`gpu-team-20250301T030000`",
				"*Key ID*\n`65f1c0ffee0000000000beef`",
				"*Old key ID*\n`65f1c0ffee0000000000dead`",
				"`SHA256:oldOLDoldOLDoldOLDoldOLDoldOLDoldOLDold` → `SHA256:newNEWnewNEWnewNEWnewNEWnewNEWnewNEWnew`",
				"*Grace deadline*\n2025-03-08T03:00:00Z (in 7d)",
				"*Vault path*\n`ssh/sesterce/gpu-team`",
				"2025-03-01T03:00:00Z",
			},
			wantText: []string{":key: gpu-team rotated", "Fingerprint: SHA256:oldOLD", "→ SHA256:newNEW"},
		},
		{
			name: "deleted to the default channel",
			ev: with(func(e *Event) {
				e.Kind, e.Channel, e.NewFingerprint, e.GraceDeadline = policy.EventDeleted, "", "", time.Time{}
			}),
			wantChannel: "#ops-keys",
			want: []string{
				":wastebasket: gpu-team: old key deleted",
				"*Old key ID*\n`65f1c0ffee0000000000dead`",
				"*Old fingerprint*\n`SHA256:oldOLDoldOLDoldOLDoldOLDoldOLDoldOLDold`",
			},
			wantText: []string{":wastebasket: gpu-team: old key deleted"},
		},
		{
			name: "failed carries the error",
			ev: with(func(e *Event) {
				e.Kind, e.Error = policy.EventFailed, `sesterce-prod: create: 403 "API key invalid"`
				e.NewFingerprint, e.KeyID, e.GraceDeadline = "", "", time.Time{}
			}),
			wantChannel: "#gpu-ops",
			want:        []string{":x: gpu-team rotation failed", "*Error*\n```sesterce-prod: create: 403 \"API key invalid\"```", "*Policy*\n`gpu-team`"},
			wantText:    []string{"Error: sesterce-prod: create: 403"},
		},
		{
			name:        "overdue",
			ev:          Event{Kind: policy.EventOverdue, Policy: "inference", Provider: "gcore-prod", ProjectID: 1234, KeyName: "inference-20241101T030000", Detail: "age 95d, max_age 90d", Time: t0},
			wantChannel: "#ops-keys",
			want:        []string{":hourglass: inference key overdue", "*Provider*\ngcore-prod (project 1234)", "age 95d, max_age 90d"},
		},
		{
			name:        "failing",
			ev:          Event{Kind: policy.EventFailing, Policy: "inference", Provider: "gcore-prod", Error: "5 consecutive failures: list keys: 503", Time: t0},
			wantChannel: "#ops-keys",
			want:        []string{":rotating_light: inference is failing", "5 consecutive failures: list keys: 503"},
		},
		{
			name:        "recovered",
			ev:          Event{Kind: policy.EventRecovered, Policy: "inference", Provider: "gcore-prod", Channel: "#ml", Time: t0},
			wantChannel: "#ml",
			want:        []string{":white_check_mark: inference recovered"},
		},
		{
			name:        "reload failed names no policy",
			ev:          Event{Kind: policy.EventReloadFailed, Error: `policies.yaml:14: policy "gpu-team": schedule: invalid cron spec "* *"`, Time: t0},
			wantChannel: "#ops-keys",
			want:        []string{":warning: config reload failed", `policies.yaml:14: policy "gpu-team": schedule: invalid cron spec "* *"`},
		},
		{
			name:        "report to its own channel",
			ev:          Event{Kind: policy.EventReport, Channel: "#compliance", Detail: "12 keys: 10 ok, 1 due, 1 overdue", Time: t0},
			wantChannel: "#compliance",
			want:        []string{":clipboard: key compliance report", "12 keys: 10 ok, 1 due, 1 overdue"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.Posts())
			if err := s.Send(context.Background(), tt.ev); err != nil {
				t.Fatalf("Send: %v", err)
			}
			posts := f.Posts()
			if got := len(posts) - before; got != 1 {
				t.Fatalf("Slack got %d messages, want 1", got)
			}
			p := posts[len(posts)-1]
			if p.Channel != tt.wantChannel {
				t.Errorf("channel = %q, want %q", p.Channel, tt.wantChannel)
			}
			body := blockText(t, p.Blocks)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("blocks lack %q:\n%s", w, body)
				}
			}
			for _, w := range tt.wantText {
				if !strings.Contains(p.Text, w) {
					t.Errorf("fallback text lacks %q:\n%s", w, p.Text)
				}
			}
			if p.Form.Get("token") != testToken {
				t.Errorf("request did not authenticate with the bot token")
			}
		})
	}
}

func TestSlack_Send_errors(t *testing.T) {
	tests := []struct {
		name           string
		reply          reply
		wantRetry      bool
		wantRetryAfter time.Duration
		wantMsg        string
	}{
		{"429 with Retry-After", replyRateLimited, true, time.Second, "rate limit"},
		{"429 without Retry-After", reply{status: http.StatusTooManyRequests}, true, 0, "429"},
		{"500", replyUnavailable, true, 0, "500"},
		{"503", reply{status: http.StatusServiceUnavailable}, true, 0, "503"},
		{"ratelimited in the body", replyAPIError("ratelimited"), true, 0, "ratelimited"},
		{"channel_not_found", replyAPIError("channel_not_found"), false, 0, "post message to #gpu-ops: channel_not_found"},
		{"invalid_auth", replyAPIError("invalid_auth"), false, 0, "invalid_auth"},
		{"not_in_channel", replyAPIError("not_in_channel"), false, 0, "not_in_channel"},
		{"400", reply{status: http.StatusBadRequest}, false, 0, "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSlack(t)
			s := newBot(t, f, nil)
			f.answer(tt.reply)
			err := s.Send(context.Background(), rotatedEvent())
			if err == nil {
				t.Fatal("Send succeeded, want an error")
			}
			if got := errors.Is(err, ErrRetry); got != tt.wantRetry {
				t.Errorf("errors.Is(%v, ErrRetry) = %v, want %v", err, got, tt.wantRetry)
			}
			if got := errors.Is(err, ErrPermanent); got == tt.wantRetry {
				t.Errorf("errors.Is(%v, ErrPermanent) = %v, want %v", err, got, !tt.wantRetry)
			}
			if got := RetryAfter(err); got != tt.wantRetryAfter {
				t.Errorf("RetryAfter = %v, want %v", got, tt.wantRetryAfter)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
			if len(f.Posts()) != 0 {
				t.Errorf("a refused message was recorded as posted")
			}
		})
	}

	t.Run("slack unreachable", func(t *testing.T) {
		f := newFakeSlack(t)
		s := newBot(t, f, nil)
		f.Stop()
		err := s.Send(context.Background(), rotatedEvent())
		if !errors.Is(err, ErrRetry) {
			t.Errorf("Send to a closed server = %v, want ErrRetry", err)
		}
	})

	t.Run("no channel anywhere", func(t *testing.T) {
		f := newFakeSlack(t)
		s, err := New(Config{Token: testToken, APIURL: f.GetAPIURL(), ChannelRate: rate.Inf})
		if err != nil {
			t.Fatal(err)
		}
		ev := rotatedEvent()
		ev.Channel = ""
		err = s.Send(context.Background(), ev)
		if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "no channel") {
			t.Errorf("Send without a channel = %v, want a permanent 'no channel' error", err)
		}
		if f.Requests() != 0 {
			t.Errorf("Slack got %d requests, want none", f.Requests())
		}
	})
}

func TestSlack_Send_channelRate(t *testing.T) {
	f := newFakeSlack(t)
	s, err := New(Config{
		Token: testToken, APIURL: f.GetAPIURL(), Timeout: time.Second,
		ChannelRate: rate.Every(time.Hour), ChannelBurst: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ev := rotatedEvent()
	if err := s.Send(context.Background(), ev); err != nil {
		t.Fatalf("first message: %v", err)
	}
	err = s.Send(context.Background(), ev)
	if !errors.Is(err, ErrRetry) || RetryAfter(err) < 59*time.Minute {
		t.Errorf("second message to the same channel = %v (retry after %v), want ErrRetry after about an hour", err, RetryAfter(err))
	}
	if f.Requests() != 1 {
		t.Errorf("Slack got %d requests, want 1: the limiter should hold the second one back", f.Requests())
	}
	ev.Channel = "#other"
	if err := s.Send(context.Background(), ev); err != nil {
		t.Errorf("a message to another channel: %v, want it sent", err)
	}
}

// fakeWebhook is an incoming webhook endpoint.
type fakeWebhook struct {
	mu     sync.Mutex
	status int
	paths  []string
	bodies []string
}

func (h *fakeWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.paths = append(h.paths, r.URL.Path)
	h.bodies = append(h.bodies, string(body))
	if h.status != 0 {
		w.WriteHeader(h.status)
		_, _ = io.WriteString(w, "no_service")
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// seen returns the paths and bodies of the requests so far.
func (h *fakeWebhook) seen() (paths, bodies []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.paths), slices.Clone(h.bodies)
}

func (h *fakeWebhook) fail(status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status = status
}

const webhookPath = "/services/T0001/B0002/WeBhOoKsEcReT"

func newWebhook(t *testing.T) (*fakeWebhook, *httptest.Server, *Slack) {
	t.Helper()
	h := &fakeWebhook{}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s, err := New(Config{WebhookURL: secret.Secret(srv.URL + webhookPath), ChannelRate: rate.Inf, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return h, srv, s
}

func TestSlack_Send_webhook(t *testing.T) {
	t.Run("posts the blocks to the webhook", func(t *testing.T) {
		h, _, s := newWebhook(t)
		if err := s.Send(context.Background(), rotatedEvent()); err != nil {
			t.Fatalf("Send: %v", err)
		}
		paths, bodies := h.seen()
		if len(paths) != 1 || paths[0] != webhookPath {
			t.Fatalf("webhook requests = %q, want one to %s", paths, webhookPath)
		}
		var msg struct {
			Text    string          `json:"text"`
			Channel string          `json:"channel"`
			Blocks  json.RawMessage `json:"blocks"`
		}
		if err := json.Unmarshal([]byte(bodies[0]), &msg); err != nil {
			t.Fatalf("decode webhook body: %v", err)
		}
		if msg.Channel != "" {
			t.Errorf("webhook body names channel %q; the webhook fixes it", msg.Channel)
		}
		body := blockText(t, string(msg.Blocks))
		for _, w := range []string{":key: gpu-team rotated", "`SHA256:oldOLDoldOLDoldOLDoldOLDoldOLDoldOLDold` → `SHA256:newNEW", "*Vault path*\n`ssh/sesterce/gpu-team`"} {
			if !strings.Contains(body, w) {
				t.Errorf("webhook blocks lack %q:\n%s", w, body)
			}
		}
		if !strings.Contains(msg.Text, "gpu-team rotated") {
			t.Errorf("webhook fallback text = %q", msg.Text)
		}
	})

	tests := []struct {
		name      string
		status    int
		wantRetry bool
	}{
		{"500 is temporary", http.StatusInternalServerError, true},
		{"404 no_service is permanent", http.StatusNotFound, false},
		{"403 invalid_token is permanent", http.StatusForbidden, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, s := newWebhook(t)
			h.fail(tt.status)
			err := s.Send(context.Background(), rotatedEvent())
			if err == nil || errors.Is(err, ErrRetry) != tt.wantRetry {
				t.Errorf("Send = %v, want retry=%v", err, tt.wantRetry)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"neither token nor webhook", Config{}, "need a bot token or a webhook URL"},
		{"both", Config{Token: testToken, WebhookURL: "https://hooks.slack.com/services/T/B/X"}, "mutually exclusive"},
		{"webhook not a URL", Config{WebhookURL: "hooks.slack.com/services/T/B/SeCrEt"}, "not an http(s) URL"},
		{"webhook bad scheme", Config{WebhookURL: "ftp://hooks.slack.com/services/T/B/SeCrEt"}, "not an http(s) URL"},
		{"token", Config{Token: testToken}, ""},
		{"webhook", Config{WebhookURL: "https://hooks.slack.com/services/T/B/SeCrEt"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || s == nil {
					t.Fatalf("New = %v, %v; want a notifier", s, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "SeCrEt") {
				t.Errorf("error %q quotes the webhook URL", err)
			}
		})
	}
}
