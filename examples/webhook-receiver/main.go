// Command webhook-receiver is a minimal receiver of rotatord's webhooks,
// standard library only: it checks each request's X-Rotatord-Signature
// against the shared secret before it trusts a byte of the body, drops
// events it has already seen (delivery is at least once), and logs the
// rest. Copy it as the start of your own integration.
//
//	WEBHOOK_SECRET=... go run ./examples/webhook-receiver -listen 127.0.0.1:8090
//
// and in rotatord's config:
//
//	webhooks:
//	  - url_env: DEPLOY_HOOK_URL        # http://127.0.0.1:8090/rotatord
//	    secret_env: DEPLOY_HOOK_SECRET  # the same secret
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// cloudEvent is the part of rotatord's CloudEvents 1.0 document this
// receiver reads.
type cloudEvent struct {
	SpecVersion string    `json:"specversion"`
	Type        string    `json:"type"` // io.rotatord.rotated, io.rotatord.failed, ...
	Source      string    `json:"source"`
	ID          string    `json:"id"` // the same on every retry of one event
	Time        time.Time `json:"time"`
	Subject     string    `json:"subject"` // the policy
	Data        struct {
		Kind           string `json:"kind"`
		Policy         string `json:"policy"`
		KeyID          string `json:"key_id"`
		KeyName        string `json:"key_name"`
		NewFingerprint string `json:"new_fingerprint"`
		OldFingerprint string `json:"old_fingerprint"`
		VaultPath      string `json:"vault_path"`
		Error          string `json:"error"`
	} `json:"data"`
}

// verify reports whether header is "sha256=" followed by the hex
// HMAC-SHA256 of body under secret. hmac.Equal compares in constant time,
// so the answer's timing does not reveal how much of a forgery was right.
func verify(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(sig, mac.Sum(nil))
}

// receiver handles POSTs of rotatord events.
type receiver struct {
	secret []byte
	log    *log.Logger
	handle func(cloudEvent) // what your integration does with an event

	mu   sync.Mutex
	seen map[string]bool // event ids already handled; keep them in a database in production
}

func newReceiver(secret []byte, logger *log.Logger, handle func(cloudEvent)) *receiver {
	return &receiver{secret: secret, log: logger, handle: handle, seen: map[string]bool{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	// Verify the exact bytes received, before decoding them.
	if !verify(rc.secret, body, r.Header.Get("X-Rotatord-Signature")) {
		rc.log.Printf("rejected a request with a missing or bad signature from %s", r.RemoteAddr)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev cloudEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.SpecVersion != "1.0" || ev.ID == "" {
		http.Error(w, "not a CloudEvents 1.0 document", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	dup := rc.seen[ev.ID]
	rc.seen[ev.ID] = true
	rc.mu.Unlock()
	if dup {
		// A retry of an event already handled: acknowledge it again.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	rc.log.Printf("%s %s policy=%s key=%s fingerprint=%s", ev.ID, ev.Type, ev.Subject, ev.Data.KeyID, ev.Data.NewFingerprint)
	rc.handle(ev)
	w.WriteHeader(http.StatusNoContent)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "`host:port` to listen on")
	flag.Parse()
	secret := os.Getenv("WEBHOOK_SECRET")
	if secret == "" {
		log.Fatal("set WEBHOOK_SECRET to the secret rotatord signs with")
	}
	logger := log.New(os.Stderr, "webhook-receiver: ", log.LstdFlags)
	rc := newReceiver([]byte(secret), logger, func(ev cloudEvent) {
		// Your integration goes here: redeploy, sync the new public key, ...
	})
	srv := &http.Server{Addr: *listen, Handler: rc, ReadHeaderTimeout: 10 * time.Second}
	logger.Printf("listening on %s", *listen)
	log.Fatal(srv.ListenAndServe())
}
