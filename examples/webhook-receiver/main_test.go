package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/notify"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/policy"
)

const shared = "whsec-example-shared-secret"

// recorder collects the events the receiver handed to the integration.
type recorder struct {
	mu  sync.Mutex
	evs []cloudEvent
}

func (r *recorder) handle(ev cloudEvent) { r.mu.Lock(); r.evs = append(r.evs, ev); r.mu.Unlock() }
func (r *recorder) all() []cloudEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cloudEvent(nil), r.evs...)
}

func start(t *testing.T) (*httptest.Server, *recorder, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	rec := &recorder{}
	srv := httptest.NewServer(newReceiver([]byte(shared), log.New(&logs, "", 0), rec.handle))
	t.Cleanup(srv.Close)
	return srv, rec, &logs
}

func rotated() notify.Event {
	return notify.Event{
		Kind: policy.EventRotated, Policy: "gpu-team", Provider: "sesterce-prod",
		KeyName: "gpu-team-20261201T100000", KeyID: "65f1c0ffee0000000000beef",
		NewFingerprint: "SHA256:newNEWnewNEWnewNEWnewNEWnewNEWnewNEWnew", VaultPath: "ssh/sesterce/gpu-team",
		Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
	}
}

// rotatord's own sender, signing with the shared secret, is accepted; a
// retry of the same event is acknowledged but handled once.
func TestReceiver_acceptsRotatordsSignature(t *testing.T) {
	srv, rec, _ := start(t)
	w, err := notify.NewWebhook(notify.WebhookConfig{Name: "example", URL: secret.Secret(srv.URL + "/rotatord"), Secret: shared})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.Send(context.Background(), rotated()); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	evs := rec.all()
	if len(evs) != 1 {
		t.Fatalf("handled %d events, want 1 (the second send is a retry of the same id)", len(evs))
	}
	ev := evs[0]
	if ev.Type != "io.rotatord.rotated" || ev.Subject != "gpu-team" || ev.ID != notify.EventID(rotated()) ||
		ev.Data.KeyID != "65f1c0ffee0000000000beef" || ev.Data.VaultPath != "ssh/sesterce/gpu-team" {
		t.Errorf("handled %+v", ev)
	}
}

// A sender with another secret gets a 401, which rotatord treats as a
// permanent failure (a configuration to fix), and nothing is handled.
func TestReceiver_rejectsAnotherSecret(t *testing.T) {
	srv, rec, logs := start(t)
	w, err := notify.NewWebhook(notify.WebhookConfig{Name: "example", URL: secret.Secret(srv.URL), Secret: "not-the-shared-secret"})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Send(context.Background(), rotated())
	if !errors.Is(err, notify.ErrPermanent) || !strings.Contains(err.Error(), "401") {
		t.Errorf("Send with the wrong secret: %v; want a permanent 401", err)
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("handled %d events from a forged sender", n)
	}
	if !strings.Contains(logs.String(), "bad signature") {
		t.Errorf("the rejection was not logged: %q", logs)
	}
}

func TestReceiver(t *testing.T) {
	body := []byte(`{"specversion":"1.0","type":"io.rotatord.failed","source":"rotatord/ops1","id":"abc123","subject":"gpu-team","datacontenttype":"application/json","data":{"kind":"failed","policy":"gpu-team"}}`)
	sign := func(b []byte) string { return notify.Sign(shared, b) }
	tests := []struct {
		name     string
		method   string
		body     []byte
		sig      string
		want     int
		wantSeen int
	}{
		{"valid", http.MethodPost, body, sign(body), http.StatusNoContent, 1},
		{"no signature", http.MethodPost, body, "", http.StatusUnauthorized, 0},
		{"signature of other bytes", http.MethodPost, bytes.Replace(body, []byte("failed"), []byte("rotated"), 1), sign(body), http.StatusUnauthorized, 0},
		{"signature without its prefix", http.MethodPost, body, strings.TrimPrefix(sign(body), "sha256="), http.StatusUnauthorized, 0},
		{"signature not hex", http.MethodPost, body, "sha256=zz", http.StatusUnauthorized, 0},
		{"signed but not a CloudEvent", http.MethodPost, []byte(`{"hello":1}`), sign([]byte(`{"hello":1}`)), http.StatusBadRequest, 0},
		{"GET", http.MethodGet, nil, "", http.StatusMethodNotAllowed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec, _ := start(t)
			req, err := http.NewRequest(tt.method, srv.URL, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.sig != "" {
				req.Header.Set("X-Rotatord-Signature", tt.sig)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || len(rec.all()) != tt.wantSeen {
				t.Errorf("status %d, %d events handled; want %d, %d", resp.StatusCode, len(rec.all()), tt.want, tt.wantSeen)
			}
		})
	}
}
