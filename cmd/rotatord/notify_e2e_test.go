package main_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// webhook is a Slack incoming-webhook stand-in that fails its first
// answers, then records what it accepts.
type webhook struct {
	mu       sync.Mutex
	failNext int
	failed   int
	accepted []string
}

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failNext > 0 {
		w.failNext--
		w.failed++
		http.Error(rw, "internal_error", http.StatusInternalServerError)
		return
	}
	w.accepted = append(w.accepted, string(body))
	_, _ = rw.Write([]byte("ok"))
}

func (w *webhook) count(substr string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.accepted {
		if strings.Contains(a, substr) {
			n++
		}
	}
	return n
}

func (w *webhook) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.accepted, "\n")
}

// TestSlack_OutageAndRestartLoseNothing: Slack answers 500 while a
// rotation is announced; the daemon is restarted before the retry; the
// message is delivered exactly once afterwards, with no key material.
func TestSlack_OutageAndRestartLoseNothing(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	hook := &webhook{failNext: 1 << 30}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	e.writeConfig([]policyYAML{{Name: "gpu"}}, "slack: {webhook_url_env: E2E_WEBHOOK}\n")
	envs := []string{"E2E_WEBHOOK=" + srv.URL + "/services/T000/B000/secretpart"}

	d := e.startDaemon(envs...)
	out, stderr, code := e.rotatord(envs, "rotate", "-config", e.cfgPath, "-policy", "gpu")
	if code != 0 {
		t.Fatalf("rotate: %s %s", out, stderr)
	}
	keyName := strings.Fields(out)[2] // "gpu: rotated: NAME [ID] FP"
	eventually(t, 10*time.Second, "a failed delivery", func() bool { hook.mu.Lock(); defer hook.mu.Unlock(); return hook.failed > 0 })
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if hook.count(keyName) != 0 {
		t.Fatal("delivered although Slack failed every time")
	}

	hook.mu.Lock()
	hook.failNext = 0
	hook.mu.Unlock()
	e.startDaemon(envs...)
	eventually(t, 30*time.Second, "delivery after the restart", func() bool { return hook.count(keyName) >= 1 })
	time.Sleep(2 * time.Second)
	if n := hook.count(keyName); n != 1 {
		t.Fatalf("the rotated message was delivered %d times, want exactly 1", n)
	}
	payload := hook.all()
	var msg map[string]any
	if err := json.Unmarshal([]byte(hook.accepted[0]), &msg); err != nil {
		t.Fatalf("webhook payload is not JSON: %v", err)
	}
	for _, leak := range []string{"PRIVATE KEY", vaultSrv.RootToken.Reveal(), "secretpart", cloudtest.DefaultSesterceAPIKey.Reveal()} {
		if strings.Contains(payload, leak) {
			t.Errorf("a Slack payload contains %q", leak)
		}
	}
}

// TestSlack_ScheduledDigest: report.schedule posts the compliance digest.
func TestSlack_ScheduledDigest(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	hook := &webhook{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	e.writeConfig([]policyYAML{{Name: "gpu"}}, "slack: {webhook_url_env: E2E_WEBHOOK}\nreport: {schedule: \"@every 2s\"}\n")
	envs := []string{"E2E_WEBHOOK=" + srv.URL + "/hook"}
	if _, stderr, code := e.rotatord(envs, "run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatal(stderr)
	}
	e.startDaemon(envs...)
	eventually(t, 20*time.Second, "the digest", func() bool { return hook.count("1 ok") >= 1 })
}

// TestDaemon_SdNotify: READY once state is open and schedules are built,
// RELOADING/READY around a reload, STOPPING on shutdown.
func TestDaemon_SdNotify(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.writeConfig([]policyYAML{{Name: "gpu"}}, "")
	sock := filepath.Join(e.dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, strings.TrimSpace(string(buf[:n])))
			mu.Unlock()
		}
	}()
	seen := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(got, "|") }
	d := e.startDaemon("NOTIFY_SOCKET=" + sock)
	eventually(t, 5*time.Second, "READY=1", func() bool { return seen() == "READY=1" })
	d.signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "RELOADING=1 then READY=1", func() bool { return seen() == "READY=1|RELOADING=1|READY=1" })
	d.signal(syscall.SIGTERM)
	d.wait(30 * time.Second)
	if s := seen(); s != "READY=1|RELOADING=1|READY=1|STOPPING=1" {
		t.Fatalf("sd_notify states %q", s)
	}
}
