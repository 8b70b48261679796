package state

import (
	"time"

	"github.com/rotatord/rotatord/internal/audit"
)

// Step is how far a rotation has got. Each step is journaled before the side
// effect that follows it, so a restarted daemon knows where to resume.
type Step string

// The steps of the rotation saga, in order. StepDone and StepFailed are
// terminal; every other step is an open rotation that the engine resumes.
const (
	// StepPlanned: the decision is recorded, nothing is done outside yet.
	StepPlanned Step = "planned"
	// StepPendingStored: the private key is in Vault at <vault_path>/pending.
	StepPendingStored Step = "pending_stored"
	// StepUploaded: the key exists on the provider and its KeyID is known.
	StepUploaded Step = "uploaded"
	// StepActivated: the key is the account default (Sesterce with
	// make_default). A key active once uploaded (Gcore) is never journaled
	// at this step: the next commit is done.
	StepActivated Step = "activated"
	// StepPromoted: the key is written to <vault_path> and pending is
	// deleted. Only journals of earlier versions hold it: the promotion
	// now commits together with done, no side effect coming between.
	StepPromoted Step = "promoted"
	// StepDone: the old key is scheduled for retirement; the rotation is over.
	StepDone Step = "done"
	// StepFailed: the rotation was abandoned (cleanup done or not needed).
	StepFailed Step = "failed"
)

// Terminal reports whether the rotation is over (done or failed), that is,
// whether a restarted engine has nothing left to resume.
func (s Step) Terminal() bool { return s == StepDone || s == StepFailed }

// valid reports whether s is one of the declared steps. PutRotation refuses
// anything else, because a misspelt step would silently drop a rotation out
// of (or keep it forever in) OpenRotations.
func (s Step) valid() bool {
	switch s {
	case StepPlanned, StepPendingStored, StepUploaded, StepActivated, StepPromoted, StepDone, StepFailed:
		return true
	}
	return false
}

// Rotation is one journaled run of the rotation saga.
//
// It deliberately has no field for a private key: the state file is neither
// encrypted nor access-controlled beyond its 0600 mode, it ends up in backups,
// and the design promises that private keys live only in Vault. Do not add
// one. Free-text fields (Reason, Error) are scrubbed of PEM private key blocks
// on write as a second line of defence.
type Rotation struct {
	ID        string `json:"id"`
	Policy    string `json:"policy"`
	Provider  string `json:"provider,omitzero"`
	ProjectID int64  `json:"project_id,omitzero"`
	Step      Step   `json:"step"`
	// Reason says why the rotation was planned (due, overdue, missing key...).
	Reason string `json:"reason,omitzero"`
	// Trigger says who asked: schedule, signal, socket, cli or resume (the
	// rotate.Trigger* constants).
	Trigger   string `json:"trigger,omitzero"`
	Emergency bool   `json:"emergency,omitzero"`

	// The new key. PublicKey is the authorized_keys line; never a private key.
	KeyName     string `json:"key_name,omitzero"`
	PublicKey   string `json:"public_key,omitzero"`
	Fingerprint string `json:"fingerprint,omitzero"`
	KeyID       string `json:"key_id,omitzero"`

	// The key being replaced, if any.
	OldKeyID       string `json:"old_key_id,omitzero"`
	OldFingerprint string `json:"old_fingerprint,omitzero"`

	// VaultVersion is the check-and-set guard of the promotion: the
	// version of <vault_path> rotatord last wrote, as of plan time (0:
	// none); once promoted, the version that holds the new key.
	VaultVersion int `json:"vault_version,omitzero"`

	StartedAt  time.Time `json:"started_at,omitzero"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Attempts   int       `json:"attempts,omitzero"`
	Error      string    `json:"error,omitzero"`
}

// KeyStatus is what rotatord believes about one key it manages.
type KeyStatus string

// Key statuses.
const (
	// KeyActive: the key consumers should use (the one in <vault_path>).
	KeyActive KeyStatus = "active"
	// KeyRetiring: superseded, waiting for DeleteAfter before deletion.
	KeyRetiring KeyStatus = "retiring"
	// KeyDeleted: deleted on the provider; kept for the audit trail.
	KeyDeleted KeyStatus = "deleted"
	// KeyOrphaned: found on the provider under the policy's naming scheme
	// but not the result of a completed rotation (e.g. an upload whose
	// rotation failed); the retire sweep deletes it.
	KeyOrphaned KeyStatus = "orphaned"
	// KeyPending: uploaded by a rotation that has not finished; it becomes
	// active when the rotation is done. Recording it at upload keeps the
	// reconciler from taking the in-flight key for an orphan.
	KeyPending KeyStatus = "pending"
	// KeySuperseded: replaced, with no deletion scheduled by rotatord.
	KeySuperseded KeyStatus = "superseded"
)

// KeyRecord is one SSH key that a policy manages or managed.
//
// Like Rotation it has no private key field, on purpose: see Rotation.
type KeyRecord struct {
	Policy      string    `json:"policy"`
	Provider    string    `json:"provider,omitzero"`
	ProjectID   int64     `json:"project_id,omitzero"`
	KeyID       string    `json:"key_id"`
	Name        string    `json:"name,omitzero"`
	Fingerprint string    `json:"fingerprint,omitzero"`
	PublicKey   string    `json:"public_key,omitzero"`
	Status      KeyStatus `json:"status"`
	// RotationID is the rotation that created the key.
	RotationID  string    `json:"rotation_id,omitzero"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	// DeleteAfter is when the retire sweep may delete a retiring key.
	DeleteAfter time.Time `json:"delete_after,omitzero"`
	DeletedAt   time.Time `json:"deleted_at,omitzero"`
	// VaultVersion is the KV v2 version of <vault_path> holding the key.
	VaultVersion int `json:"vault_version,omitzero"`
}

// PolicyStatus is the per-policy health that survives restarts: the retry
// backoff and the failing flag must not reset when the daemon restarts.
type PolicyStatus struct {
	Name                string    `json:"name"`
	LastAttempt         time.Time `json:"last_attempt,omitzero"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	ConsecutiveFailures int       `json:"consecutive_failures,omitzero"`
	// NextRetry is the earliest time a failed policy is tried again.
	NextRetry time.Time `json:"next_retry,omitzero"`
	// Failing is set after max_failures consecutive failures and cleared on
	// the next success, so the alert fires once per episode.
	Failing      bool   `json:"failing,omitzero"`
	LastError    string `json:"last_error,omitzero"`
	LastResult   string `json:"last_result,omitzero"`
	CurrentKeyID string `json:"current_key_id,omitzero"`
	// OverdueAlerted records that the overdue alert for the current key was
	// sent, so it is not repeated every run.
	OverdueAlerted bool `json:"overdue_alerted,omitzero"`
}

// Event is a notification to send, the payload of an outbox entry. It holds
// only public facts (names, IDs, fingerprints, paths): never key material.
type Event struct {
	// ID names the event; every sink's copy carries the same one, and it
	// never changes across delivery attempts, so receivers can drop repeats.
	ID             string    `json:"id,omitzero"`
	Kind           string    `json:"kind"`
	Policy         string    `json:"policy,omitzero"`
	Provider       string    `json:"provider,omitzero"`
	ProjectID      int64     `json:"project_id,omitzero"`
	Channel        string    `json:"channel,omitzero"`
	KeyName        string    `json:"key_name,omitzero"`
	KeyID          string    `json:"key_id,omitzero"`
	OldKeyID       string    `json:"old_key_id,omitzero"`
	OldFingerprint string    `json:"old_fingerprint,omitzero"`
	NewFingerprint string    `json:"new_fingerprint,omitzero"`
	VaultPath      string    `json:"vault_path,omitzero"`
	GraceDeadline  time.Time `json:"grace_deadline,omitzero"`
	Error          string    `json:"error,omitzero"`
	Detail         string    `json:"detail,omitzero"`
	Time           time.Time `json:"time,omitzero"`
}

// OutboxEntry is an Event waiting to be delivered, with its retry state.
type OutboxEntry struct {
	ID uint64 `json:"id"`
	// Sink is who delivers it: SinkSlack, or a webhook's name.
	Sink        string    `json:"sink,omitzero"`
	Event       Event     `json:"event"`
	Attempts    int       `json:"attempts,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitzero"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
}

// AuditEntry is one entry of the append-only, hash-chained audit log that
// answers "who rotated which key when": internal/audit defines it, its
// canonical bytes and how the chain is verified. AppendAudit seals it.
type AuditEntry = audit.Entry

// utc returns t in UTC so that stored timestamps compare and print the same
// whatever the host's zone; the zero time stays zero.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

func (r *Rotation) normalize() {
	r.StartedAt, r.UpdatedAt, r.FinishedAt = utc(r.StartedAt), utc(r.UpdatedAt), utc(r.FinishedAt)
}

func (k *KeyRecord) normalize() {
	k.CreatedAt, k.ActivatedAt = utc(k.CreatedAt), utc(k.ActivatedAt)
	k.DeleteAfter, k.DeletedAt = utc(k.DeleteAfter), utc(k.DeletedAt)
}

func (s *PolicyStatus) normalize() {
	s.LastAttempt, s.LastSuccess, s.NextRetry = utc(s.LastAttempt), utc(s.LastSuccess), utc(s.NextRetry)
}

func (e *Event) normalize() {
	e.GraceDeadline, e.Time = utc(e.GraceDeadline), utc(e.Time)
}

// Current returns the policy's current key among recs: of the active
// records, the one activated last. A policy normally has exactly one; the
// engine, the status and the report all pick with this one rule, so they
// never disagree about which key is current.
func Current(recs []KeyRecord) (KeyRecord, bool) {
	var cur KeyRecord
	found := false
	for _, r := range recs {
		if r.Status == KeyActive && (!found || r.ActivatedAt.After(cur.ActivatedAt)) {
			cur, found = r, true
		}
	}
	return cur, found
}
