// Package control is the daemon's control socket: HTTP over a Unix socket
// (mode 0600) that the CLI uses for status, report, rotate and reload while
// the daemon holds the state file's lock. The daemon side serves a Backend;
// the client side is what `rotatord status|rotate|report` call.
//
// Nothing here carries key material: fingerprints, names and IDs only.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrNoDaemon means no daemon answers on the socket; commands then work
// in-process.
var ErrNoDaemon = errors.New("no rotatord daemon is listening")

// PolicyStatus is one policy as the running daemon sees it.
type PolicyStatus struct {
	Name           string    `json:"name"`
	Provider       string    `json:"provider"`
	CurrentKeyID   string    `json:"current_key_id,omitempty"`
	CurrentKeyName string    `json:"current_key_name,omitempty"`
	Fingerprint    string    `json:"fingerprint,omitempty"`
	KeyCreatedAt   time.Time `json:"key_created_at,omitzero"`
	AgeSeconds     int64     `json:"age_seconds"`
	MaxAgeSeconds  int64     `json:"max_age_seconds"`
	NextRun        time.Time `json:"next_run,omitzero"`
	// NextWindow and WindowCloses bound the policy's next maintenance
	// window (the current one while it is open); zero without a window.
	NextWindow          time.Time `json:"next_window,omitzero"`
	WindowCloses        time.Time `json:"window_closes,omitzero"`
	LastAttempt         time.Time `json:"last_attempt,omitzero"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastResult          string    `json:"last_result,omitempty"`
	LastError           string    `json:"last_error,omitempty"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	Failing             bool      `json:"failing"`
	InFlight            bool      `json:"in_flight"`
	RetiringKeys        int       `json:"retiring_keys"`
	// InstancesOnOldKeys counts the running machines (last inventory)
	// provisioned with a key of the policy that is not its current one.
	InstancesOnOldKeys int `json:"instances_on_old_keys"`
	// Hosts counts the policy's hosts by status (ok, stale, unreachable,
	// unverified); nil for a policy without hosts.
	Hosts map[string]int `json:"hosts,omitempty"`
}

// Status is the daemon's whole view.
type Status struct {
	Version        string    `json:"version"`
	PID            int       `json:"pid"`
	StartedAt      time.Time `json:"started_at"`
	ConfigFile     string    `json:"config_file"`
	ConfigLoadedAt time.Time `json:"config_loaded_at"`
	LastReloadOK   bool      `json:"last_reload_ok"`
	LastReloadErr  string    `json:"last_reload_error,omitempty"`
	OutboxPending  int       `json:"outbox_pending"`
	// Vault is nil when the daemon holds no Vault client.
	Vault    *VaultStatus   `json:"vault,omitempty"`
	Policies []PolicyStatus `json:"policies"`
	// Role is RoleLeader or RoleStandby when several rotatord processes
	// share state on etcd; empty with bbolt, where the one process acts.
	Role string `json:"role,omitempty"`
	// Leader is the process that leads, as etcd knows it; nil with bbolt
	// or while nobody leads.
	Leader *LeaderInfo `json:"leader,omitempty"`
}

// Roles of a rotatord process sharing state on etcd.
const (
	RoleLeader  = "leader"
	RoleStandby = "standby"
)

// LeaderInfo names the leading rotatord and where to reach it.
type LeaderInfo struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
}

func (l *LeaderInfo) String() string {
	if l == nil {
		return "nobody (an election is under way)"
	}
	if l.Address == "" {
		return l.Name
	}
	return l.Name + " at " + l.Address
}

// VaultStatus says whether Vault answered the last login or check.
type VaultStatus struct {
	Up    bool   `json:"up"`
	Error string `json:"error,omitempty"`
}

// RotateRequest asks for rotations now; empty Policies means all.
type RotateRequest struct {
	Policies  []string `json:"policies,omitempty"`
	Emergency bool     `json:"emergency,omitempty"`
	// Trigger is who asked, for the journal and the audit log. It never
	// crosses the socket (a caller cannot claim to be someone else): the
	// daemon records "socket" when it is empty; an in-process command sets
	// its own.
	Trigger string `json:"-"`
}

// RotateResult is one policy's outcome.
type RotateResult struct {
	Policy      string   `json:"policy"`
	Rotated     bool     `json:"rotated"`
	KeyID       string   `json:"key_id,omitempty"`
	KeyName     string   `json:"key_name,omitempty"`
	Fingerprint string   `json:"fingerprint,omitempty"`
	Deleted     []string `json:"deleted,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// ReloadResult is what a reload that succeeded applied.
type ReloadResult struct {
	// Policies is how many policies the new config schedules.
	Policies int `json:"policies"`
	// RestartRequired names the changed settings that only a restart
	// applies (state, vault, slack, control.socket, metrics.listen...);
	// until then the old values stay in force.
	RestartRequired []string `json:"restart_required,omitempty"`
	// Role and Leader, with state on etcd: a standby reloads its own
	// config (it applies when it leads) and names the leader, whose
	// config is the one in force.
	Role   string      `json:"role,omitempty"`
	Leader *LeaderInfo `json:"leader,omitempty"`
}

// AuditExportRequest asks for the audit log as an export.
type AuditExportRequest struct {
	Format string    `json:"format,omitempty"` // jsonl (default) or csv
	Since  time.Time `json:"since,omitzero"`   // from the first entry at or after it; zero: all
}

// AuditVerifyRequest asks the daemon to verify its live audit log.
type AuditVerifyRequest struct {
	// ExpectHead is a head published earlier (SEQ:HASH); the log must
	// still hold it, which catches a cut tail.
	ExpectHead string `json:"expect_head,omitempty"`
}

// AuditVerifyResult is a verification's outcome. Broken is empty when the
// log verified; otherwise it names the first bad entry and why.
type AuditVerifyResult struct {
	Entries         int    `json:"entries"`
	Base            string `json:"base,omitempty"` // the pruned head the log starts after
	Head            string `json:"head"`
	HMACChecked     bool   `json:"hmac_checked"`
	HeadChecked     bool   `json:"head_checked"`
	Checkpoints     int    `json:"checkpoints"`
	UpgradedThrough uint64 `json:"upgraded_through,omitempty"`
	Broken          string `json:"broken,omitempty"`
	BrokenSeq       uint64 `json:"broken_seq,omitempty"`
	BrokenReason    string `json:"broken_reason,omitempty"`
}

// Backend is what the daemon offers over the socket. The in-process app
// (no daemon running) offers the same, so the CLI picks one and talks to
// it the same way.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Rotate(ctx context.Context, req RotateRequest) ([]RotateResult, error)
	// Reload re-reads the config file and applies it, or keeps the running
	// config and returns why not.
	Reload(ctx context.Context) (ReloadResult, error)
	// Report returns the compliance report as JSON (the CLI formats it).
	Report(ctx context.Context) (json.RawMessage, error)
	// Plan returns the dry run of every policy as JSON (the CLI prints it).
	Plan(ctx context.Context) (json.RawMessage, error)
	// AuditExport writes the audit log to w.
	AuditExport(ctx context.Context, w io.Writer, req AuditExportRequest) error
	// AuditVerify verifies the live audit log.
	AuditVerify(ctx context.Context, req AuditVerifyRequest) (AuditVerifyResult, error)
}

// exportFailed starts the last line of an export stream that failed.
const exportFailed = "\x00rotatord: export failed: "

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// Server serves a Backend on a Unix socket.
type Server struct {
	path string
	ln   net.Listener
	srv  *http.Server
	log  *slog.Logger
}

// Listen creates the socket at path with mode 0600. A stale socket left by
// a crashed daemon is replaced; a live one is an error.
func Listen(path string, b Backend, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another rotatord is listening", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket: remove stale %s: %w", path, err)
		}
	}
	// The umask makes the socket 0600 from birth: no window in which
	// another user could connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{path: path, ln: ln, log: log}
	s.srv = &http.Server{Handler: handler(b, log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control socket stopped", "err", err)
		}
	}()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops serving (waiting for answers in flight until ctx ends) and
// removes the socket.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	_ = os.Remove(s.path)
	return err
}

func handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status(r.Context())
		reply(w, st, err)
	})
	mux.HandleFunc("POST /v1/rotate", func(w http.ResponseWriter, r *http.Request) {
		var req RotateRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			replyErr(w, http.StatusBadRequest, fmt.Errorf("decode request: %w", err))
			return
		}
		log.Info("rotation requested over the control socket", "policies", req.Policies, "emergency", req.Emergency)
		res, err := b.Rotate(r.Context(), req)
		reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.Reload(r.Context())
		reply(w, res, err)
	})
	mux.HandleFunc("GET /v1/report", func(w http.ResponseWriter, r *http.Request) {
		rep, err := b.Report(r.Context())
		reply(w, rep, err)
	})
	mux.HandleFunc("GET /v1/plan", func(w http.ResponseWriter, r *http.Request) {
		plan, err := b.Plan(r.Context())
		reply(w, plan, err)
	})
	mux.HandleFunc("POST /v1/audit/export", func(w http.ResponseWriter, r *http.Request) {
		var req AuditExportRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			replyErr(w, http.StatusBadRequest, fmt.Errorf("decode request: %w", err))
			return
		}
		// Streamed: a year's log is large. An error after the first bytes
		// cannot change the status, so it ends the stream with a trailer
		// line the client turns back into an error.
		w.Header().Set("Content-Type", "application/octet-stream")
		if err := b.AuditExport(r.Context(), w, req); err != nil {
			_, _ = fmt.Fprintf(w, "\n%s%s\n", exportFailed, err)
		}
	})
	mux.HandleFunc("POST /v1/audit/verify", func(w http.ResponseWriter, r *http.Request) {
		var req AuditVerifyRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			replyErr(w, http.StatusBadRequest, fmt.Errorf("decode request: %w", err))
			return
		}
		res, err := b.AuditVerify(r.Context(), req)
		reply(w, res, err)
	})
	return mux
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		replyErr(w, http.StatusUnprocessableEntity, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func replyErr(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(errorBody{Error: err.Error()})
}
