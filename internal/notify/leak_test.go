package notify

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/policy"
)

// leakyEvent carries planted key material in its free text fields.
func leakyEvent() Event {
	ev := rotatedEvent()
	ev.Kind = policy.EventFailed
	ev.Error = "upload key: provider echoed the request: " + plantedPEM
	ev.Detail = `journal entry {"private_key":"` + strings.ReplaceAll(plantedPEM, "\n", `\n`) + `"}`
	return ev
}

// assertNoLeak fails if any of what reached Slack, the logs or the errors
// holds a credential or key material; it also insists the redaction marker
// shows where the key was, so the test cannot pass by sending nothing.
func assertNoLeak(t *testing.T, payloads []string, logs string, errs []error, credentials ...string) {
	t.Helper()
	forbidden := append([]string{"PRIVATE KEY", "b3BlbnNzaC1rZXktdjE", "QyNTUxOQAAACBQbGFudGVk"}, credentials...)
	var errTexts []string
	for _, err := range errs {
		if err != nil {
			errTexts = append(errTexts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
		}
	}
	if len(payloads) == 0 || logs == "" || len(errTexts) == 0 {
		t.Fatalf("nothing to inspect: %d payloads, %d log bytes, %d errors", len(payloads), len(logs), len(errTexts))
	}
	for _, f := range forbidden {
		for _, p := range payloads {
			if strings.Contains(p, f) {
				t.Errorf("payload holds %q:\n%s", f, p)
			}
		}
		if strings.Contains(logs, f) {
			t.Errorf("logs hold %q:\n%s", f, logs)
		}
		for _, e := range errTexts {
			if strings.Contains(e, f) {
				t.Errorf("error holds %q: %s", f, e)
			}
		}
	}
	for _, p := range payloads {
		if !strings.Contains(p, secret.Redacted) {
			t.Errorf("payload does not show where key material was redacted:\n%s", p)
		}
	}
}

func TestSlack_leaksNoSecret(t *testing.T) {
	t.Run("bot token", func(t *testing.T) {
		r := newRig(t)
		d := r.dispatcher()
		r.out.Enqueue(leakyEvent())
		r.out.Enqueue(leakyEvent())
		r.slack.answer(replyUnavailable, replyAPIError("invalid_auth"))

		var errs []error
		for range 3 {
			_, err := d.DrainOnce(context.Background())
			errs = append(errs, err)
			r.clock.Advance(time.Hour)
		}
		if len(r.slack.Posts()) != 2 {
			t.Fatalf("Slack got %d messages, want 2", len(r.slack.Posts()))
		}
		r.slack.Stop() // and errors from an unreachable Slack
		r.out.Enqueue(leakyEvent())
		_, err := d.DrainOnce(context.Background())
		errs = append(errs, err, r.s.Send(context.Background(), leakyEvent()))

		// The token must travel as the credential of the request, and
		// nowhere else in it.
		var payloads []string
		r.slack.mu.Lock()
		for _, body := range r.slack.requests {
			form, err := url.ParseQuery(body)
			if err != nil {
				t.Fatal(err)
			}
			form.Del("token")
			payloads = append(payloads, fmt.Sprint(form)) // decoded values
			if !strings.Contains(body, "token=") {
				t.Errorf("request did not carry the token at all: %s", body)
			}
		}
		r.slack.mu.Unlock()
		cfg := Config{Token: testToken}
		errs = append(errs, fmt.Errorf("config %+v %#v", cfg, cfg))
		assertNoLeak(t, payloads, r.logs.String(), errs, testToken)
	})

	t.Run("webhook URL", func(t *testing.T) {
		h := &fakeWebhook{}
		srv := httptest.NewServer(h)
		defer srv.Close()
		hook := srv.URL + webhookPath
		logs := &logBuffer{}
		s, err := New(Config{WebhookURL: secret.Secret(hook), Logger: newLogger(logs), ChannelRate: rate.Inf})
		if err != nil {
			t.Fatal(err)
		}
		out, clock := &memOutbox{}, &fakeClock{now: t0}
		d := NewDispatcher(out, s, DispatcherOptions{Logger: newLogger(logs), Now: clock.Now})
		out.Enqueue(leakyEvent())

		var errs []error
		for _, status := range []int{http.StatusInternalServerError, http.StatusForbidden, 0} {
			h.fail(status)
			_, err := d.DrainOnce(context.Background())
			errs = append(errs, err)
			clock.Advance(time.Hour)
		}
		if out.Len() != 0 {
			t.Fatal("the webhook never accepted the message")
		}
		// An unreachable webhook, through the dispatcher so that the
		// failure is logged too: *url.Error quotes the URL.
		srv.Close()
		out.Enqueue(leakyEvent())
		_, err = d.DrainOnce(context.Background())
		errs = append(errs, err, s.Send(context.Background(), leakyEvent()))
		if !strings.Contains(logs.String(), "connection refused") {
			t.Errorf("the unreachable webhook was not logged:\n%s", logs)
		}
		// An unparsable one (New accepts it; it fails at request time).
		bad, err := New(Config{WebhookURL: "http://127.0.0.1:1/services/%zz/WeBhOoKsEcReT"})
		if err == nil {
			errs = append(errs, bad.Send(context.Background(), leakyEvent()))
		} else {
			errs = append(errs, err)
		}
		cfg := Config{WebhookURL: secret.Secret(hook)}
		errs = append(errs, fmt.Errorf("config %+v %#v", cfg, cfg))

		_, bodies := h.seen()
		assertNoLeak(t, bodies, logs.String(), errs, hook, "WeBhOoKsEcReT")
	})
}
