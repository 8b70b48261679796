package rotate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Vault data fields (DESIGN.md §5).
const (
	fieldPrivateKey = "private_key"
	fieldPublicKey  = "public_key"
	fieldFinger     = "fingerprint"
	fieldKeyID      = "key_id"
	fieldKeyName    = "key_name"
	fieldProvider   = "provider"
	fieldProjectID  = "project_id"
	fieldPolicy     = "policy"
	fieldRotationID = "rotation_id"
	fieldCreatedAt  = "created_at"
)

// PendingPath is where an in-flight rotation keeps its private key.
func PendingPath(vaultPath string) string { return vaultPath + "/pending" }

// rotate starts a new rotation and drives it to the end.
func (e *Engine) rotate(ctx context.Context, p policy.Policy, prov cloud.Provider, d Decision, opts Options) (*state.Rotation, error) {
	now := e.cfg.Now()
	r := &state.Rotation{
		ID: newRotationID(now), Policy: p.Name, Provider: p.Provider, ProjectID: p.ProjectID,
		Step: state.StepPlanned, Reason: d.Reason, Trigger: opts.Trigger, Emergency: opts.Emergency,
		KeyName: uniqueName(p, now, d), StartedAt: now, UpdatedAt: now,
	}
	// The check-and-set guard of the promotion is the version of
	// <vault_path> that rotatord itself last wrote (0: none). A write by
	// anyone else since, before this rotation or during it, fails the
	// check and is kept as the previous version (promoteOverChange).
	// Taking the guard from state spares a read of Vault per rotation.
	if d.Current != nil {
		r.OldKeyID, r.OldFingerprint = d.Current.KeyID, d.Current.Fingerprint
		r.VaultVersion = d.Current.VaultVersion
	}

	var priv secret.Secret
	if p.Key.Generate != policy.GenerateProvider {
		k, err := e.cfg.Generate(keygen.Spec{Type: p.Key.Type, Bits: p.Key.Bits, Curve: p.Key.Curve}, keygen.Comment(p.Name))
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		r.PublicKey, r.Fingerprint, priv = k.PublicKey, k.SHA256, k.PrivateKey
	}
	if err := e.step(p, r, state.StepPlanned, nil); err != nil {
		return nil, err
	}
	e.log.Info("rotation planned", "policy", p.Name, "provider", p.Provider, "reason", d.Reason, "trigger", opts.Trigger,
		"rotation_id", r.ID, "key_name", r.KeyName, "fingerprint", r.Fingerprint)
	return r, e.advance(ctx, p, prov, r, priv)
}

// uniqueName avoids reusing the name of a key the provider already holds
// (two rotations within one second).
func uniqueName(p policy.Policy, now time.Time, d Decision) string {
	taken := map[string]bool{}
	if d.Current != nil {
		taken[d.Current.Name] = true
	}
	for _, k := range append(append([]cloud.Key{}, d.Orphans...), d.Unmanaged...) {
		taken[k.Name] = true
	}
	for _, r := range append(append([]state.KeyRecord{}, d.Retire...), d.Waiting...) {
		taken[r.Name] = true
	}
	name := p.KeyName(now)
	for taken[name] {
		now = now.Add(time.Second)
		name = p.KeyName(now)
	}
	return name
}

type resumed struct {
	count int
	last  *state.Rotation
}

// resume drives the policy's unfinished rotations forward.
func (e *Engine) resume(ctx context.Context, p policy.Policy, prov cloud.Provider, opts Options) (resumed, error) {
	var open []state.Rotation
	err := e.cfg.Journal.View(func(tx state.Tx) error {
		var err error
		open, err = tx.OpenRotationsOf(p.Name)
		return err
	})
	if err != nil {
		return resumed{}, fmt.Errorf("read journal: %w", err)
	}
	var out resumed
	for i := range open {
		r := &open[i]
		if opts.Emergency {
			r.Emergency = true
		}
		e.log.Info("resuming rotation", "policy", p.Name, "rotation_id", r.ID, "step", string(r.Step))
		if err := e.advance(ctx, p, prov, r, ""); err != nil {
			return out, err
		}
		if r.Step == state.StepDone {
			out.count++
			out.last = r
		}
	}
	return out, nil
}

// advance drives r from its journaled step to the end. priv is the private
// key when this process made it (a fresh rotation): then nothing can have
// happened behind the journal's back, so the look-ups that a resumed
// rotation needs (list before create, read Vault before promote) are
// skipped. On resume priv is empty and the key is read back from pending.
func (e *Engine) advance(ctx context.Context, p policy.Policy, prov cloud.Provider, r *state.Rotation, priv secret.Secret) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		verb := stepVerb(r.Step)
		switch r.Step {
		case state.StepPlanned:
			if p.Key.Generate == policy.GenerateProvider {
				priv, err = e.createRemote(ctx, p, prov, r)
			} else {
				err = e.storePending(ctx, p, r, priv)
			}
		case state.StepPendingStored:
			err = e.upload(ctx, p, prov, r, !priv.Empty())
		case state.StepUploaded:
			if activates(p, prov) {
				err = e.activate(ctx, p, prov, r)
			} else {
				// Active once uploaded: no side effect comes between, so
				// the step is journaled with the next one. A crash before
				// then resumes here, at uploaded.
				verb = stepVerb(state.StepActivated)
				err = e.promote(ctx, p, r, priv)
			}
		case state.StepActivated:
			err = e.promote(ctx, p, r, priv)
		case state.StepPromoted:
			// Journals of earlier versions; promote now finishes at once.
			err = e.finish(p, r)
		case state.StepDone, state.StepFailed:
			return nil
		default:
			return fmt.Errorf("rotation %s: unknown step %q", r.ID, r.Step)
		}
		if err != nil {
			return fmt.Errorf("rotation %s (%s): %w", r.ID, verb, err)
		}
	}
}

func stepVerb(s state.Step) string {
	switch s {
	case state.StepPlanned:
		return "store pending key"
	case state.StepPendingStored:
		return "upload key"
	case state.StepUploaded:
		return "activate key"
	case state.StepActivated:
		return "promote key in vault"
	case state.StepPromoted:
		return "schedule retirement"
	}
	return string(s)
}

// step journals r at step s (with extra writes in the same transaction).
func (e *Engine) step(p policy.Policy, r *state.Rotation, s state.Step, extra func(tx *txn) error) error {
	prev := r.Step
	r.Step = s
	r.UpdatedAt = e.cfg.Now()
	r.Error = ""
	if s == state.StepDone || s == state.StepFailed {
		r.FinishedAt = r.UpdatedAt
	}
	err := e.commit(p, func(tx *txn) error {
		if err := tx.PutRotation(*r); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err != nil {
		r.Step = prev
		return fmt.Errorf("journal %s: %w", s, err)
	}
	e.cfg.Hook("journal:" + string(s))
	return nil
}

func (e *Engine) pendingData(p policy.Policy, r *state.Rotation, priv secret.Secret) map[string]string {
	data := map[string]string{
		fieldPrivateKey: priv.Reveal(),
		fieldPublicKey:  r.PublicKey,
		fieldFinger:     r.Fingerprint,
		fieldKeyName:    r.KeyName,
		fieldProvider:   p.Provider,
		fieldPolicy:     p.Name,
		fieldRotationID: r.ID,
		fieldCreatedAt:  r.StartedAt.UTC().Format(time.RFC3339),
	}
	if r.KeyID != "" {
		data[fieldKeyID] = r.KeyID
	}
	if p.ProjectID != 0 {
		data[fieldProjectID] = strconv.FormatInt(p.ProjectID, 10)
	}
	return data
}

// readPending returns the pending data of r, or nil when the pending path
// holds another rotation's key or nothing.
func (e *Engine) readPending(ctx context.Context, p policy.Policy, r *state.Rotation) (map[string]string, error) {
	data, _, err := e.cfg.Keys.Get(ctx, PendingPath(p.VaultPath))
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", PendingPath(p.VaultPath), err)
	}
	if data[fieldRotationID] != r.ID {
		return nil, nil
	}
	return data, nil
}

// storePending (step 3): the private key goes to Vault before its public
// half goes anywhere.
func (e *Engine) storePending(ctx context.Context, p policy.Policy, r *state.Rotation, priv secret.Secret) error {
	if priv.Empty() {
		// Resumed after a crash: the key is either already pending in Vault
		// or was lost with the process before anything left it.
		data, err := e.readPending(ctx, p, r)
		if err != nil {
			return err
		}
		if data == nil {
			return e.abandon(p, r, "process stopped before the private key reached the key store; nothing was uploaded")
		}
		return e.step(p, r, state.StepPendingStored, nil)
	}
	e.cfg.Hook("before:store_pending")
	if _, err := e.cfg.Keys.Put(ctx, PendingPath(p.VaultPath), e.pendingData(p, r, priv), -1); err != nil {
		return fmt.Errorf("write %s: %w", PendingPath(p.VaultPath), err)
	}
	e.cfg.Hook("after:store_pending")
	return e.step(p, r, state.StepPendingStored, nil)
}

// abandon ends a rotation that cannot continue and left nothing behind.
func (e *Engine) abandon(p policy.Policy, r *state.Rotation, why string) error {
	e.log.Warn("rotation abandoned", "policy", p.Name, "rotation_id", r.ID, "reason", why)
	return e.step(p, r, state.StepFailed, func(tx *txn) error {
		return tx.audit(audit.Entry{Event: audit.EventRotationAbandoned, Trigger: r.Trigger, KeyID: r.KeyID, KeyName: r.KeyName,
			Fingerprint: r.Fingerprint, RotationID: r.ID, Detail: why})
	})
}

// findKey looks for the rotation's key on the provider by name (and
// fingerprint when known).
func findKey(keys []cloud.Key, r *state.Rotation) (cloud.Key, bool) {
	for _, k := range keys {
		if k.Name == r.KeyName && (r.Fingerprint == "" || k.Fingerprint == r.Fingerprint) {
			return k, true
		}
	}
	return cloud.Key{}, false
}

// upload (step 4) creates the key on the provider, unless an earlier attempt
// already did (found by name + fingerprint). A fresh rotation has made no
// earlier attempt, so it skips the look-up.
func (e *Engine) upload(ctx context.Context, p policy.Policy, prov cloud.Provider, r *state.Rotation, fresh bool) error {
	var (
		key   cloud.Key
		found bool
	)
	if !fresh {
		keys, err := prov.List(ctx, p.ProjectID)
		if err != nil {
			return fmt.Errorf("list keys: %w", err)
		}
		key, found = findKey(keys, r)
	}
	if !found {
		e.cfg.Hook("before:upload")
		created, err := prov.Create(ctx, p.ProjectID, cloud.CreateRequest{Name: r.KeyName, PublicKey: r.PublicKey, SharedInProject: sharedInProject(p)})
		if err != nil {
			return fmt.Errorf("create key %s: %w", r.KeyName, err)
		}
		e.cfg.Hook("after:upload")
		key = created.Key
	}
	if key.Fingerprint != r.Fingerprint {
		return fmt.Errorf("provider returned key %s with fingerprint %s, want %s", key.ID, key.Fingerprint, r.Fingerprint)
	}
	return e.recordUploaded(p, r, key)
}

func sharedInProject(p policy.Policy) *bool {
	if p.ProviderType != policy.TypeGcore {
		return nil
	}
	v := p.SharedInProject
	return &v
}

// recordUploaded journals step uploaded together with a pending key record,
// so the reconciler never mistakes the in-flight key for an orphan.
func (e *Engine) recordUploaded(p policy.Policy, r *state.Rotation, key cloud.Key) error {
	r.KeyID = key.ID
	created := key.CreatedAt
	if created.IsZero() {
		created = e.cfg.Now()
	}
	return e.step(p, r, state.StepUploaded, func(tx *txn) error {
		if err := tx.PutKey(state.KeyRecord{
			Policy: p.Name, Provider: p.Provider, ProjectID: p.ProjectID,
			KeyID: key.ID, Name: key.Name, Fingerprint: key.Fingerprint, PublicKey: key.PublicKey,
			Status: state.KeyPending, RotationID: r.ID, CreatedAt: created,
		}); err != nil {
			return err
		}
		return tx.audit(audit.Entry{Event: audit.EventKeyUploaded, Trigger: r.Trigger, KeyID: key.ID, KeyName: key.Name,
			Fingerprint: key.Fingerprint, RotationID: r.ID, VaultPath: PendingPath(p.VaultPath)})
	})
}

// createRemote is step 2+3+4 for keys the provider generates (Gcore
// generate: provider): the private key comes back once, so it goes to Vault
// at once, before anything else is journaled.
func (e *Engine) createRemote(ctx context.Context, p policy.Policy, prov cloud.Provider, r *state.Rotation) (secret.Secret, error) {
	keys, err := prov.List(ctx, p.ProjectID)
	if err != nil {
		return "", fmt.Errorf("list keys: %w", err)
	}
	if k, found := findKey(keys, r); found {
		// Created by an earlier attempt. Its private half is usable only if
		// it reached Vault before that attempt died.
		data, err := e.readPending(ctx, p, r)
		if err != nil {
			return "", err
		}
		if data != nil && data[fieldFinger] == k.Fingerprint {
			r.PublicKey, r.Fingerprint = k.PublicKey, k.Fingerprint
			return "", e.recordUploaded(p, r, k)
		}
		// The private key is lost: the key is debris. It was never active.
		if err := prov.Delete(ctx, p.ProjectID, k.ID); err != nil && !errors.Is(err, cloud.ErrNotFound) {
			return "", fmt.Errorf("delete key %s whose private half was lost: %w", k.ID, err)
		}
		return "", e.abandon(p, r, "provider-generated key "+k.ID+" lost its private half in a crash; deleted it")
	}
	e.cfg.Hook("before:upload")
	created, err := prov.Create(ctx, p.ProjectID, cloud.CreateRequest{Name: r.KeyName, SharedInProject: sharedInProject(p)})
	if err != nil {
		return "", fmt.Errorf("create key %s: %w", r.KeyName, err)
	}
	e.cfg.Hook("after:upload")
	if created.PrivateKey.Empty() {
		return "", fmt.Errorf("create key %s: provider returned no private key", r.KeyName)
	}
	parsed, err := keygen.ParsePrivateKey(created.PrivateKey)
	if err != nil {
		return "", fmt.Errorf("provider-generated key %s: %w", created.ID, err)
	}
	if parsed.SHA256 != created.Fingerprint {
		return "", fmt.Errorf("provider-generated key %s: private key fingerprint %s does not match the uploaded key %s", created.ID, parsed.SHA256, created.Fingerprint)
	}
	r.PublicKey, r.Fingerprint, r.KeyID = created.PublicKey, created.Fingerprint, created.ID
	if _, err := e.cfg.Keys.Put(ctx, PendingPath(p.VaultPath), e.pendingData(p, r, created.PrivateKey), -1); err != nil {
		return "", fmt.Errorf("write %s: %w", PendingPath(p.VaultPath), err)
	}
	e.cfg.Hook("after:store_pending")
	return created.PrivateKey, e.recordUploaded(p, r, created.Key)
}

// activates reports whether a key of p has a step 5 on its provider: a
// default to set.
func activates(p policy.Policy, prov cloud.Provider) bool {
	return prov.Capabilities().DefaultKey && p.MakeDefault
}

// activate (step 5): make the key the account default, then list again and
// check that exactly the new key is default.
func (e *Engine) activate(ctx context.Context, p policy.Policy, prov cloud.Provider, r *state.Rotation) error {
	e.cfg.Hook("before:activate")
	if err := prov.SetDefault(ctx, p.ProjectID, r.KeyID); err != nil {
		return fmt.Errorf("make key %s default: %w", r.KeyID, err)
	}
	e.cfg.Hook("after:activate")
	keys, err := prov.List(ctx, p.ProjectID)
	if err != nil {
		return fmt.Errorf("verify default: %w", err)
	}
	var defaults []string
	for _, k := range keys {
		if k.Default {
			defaults = append(defaults, k.ID)
		}
	}
	if len(defaults) != 1 || defaults[0] != r.KeyID {
		return fmt.Errorf("verify default: provider reports default keys %v, want exactly %s: %w", defaults, r.KeyID, cloud.ErrTransient)
	}
	return e.step(p, r, state.StepActivated, nil)
}

// promote (step 6): the key becomes the current version of <vault_path>
// (check-and-set on the version rotatord last wrote), then the pending
// copy is removed. priv is set on a fresh rotation, which cannot have
// promoted already; a resumed one checks Vault first. No side effect
// follows before step 7, so the promotion is journaled with it (finish):
// a crash in between resumes at the step before and finds the key
// promoted.
func (e *Engine) promote(ctx context.Context, p policy.Policy, r *state.Rotation, priv secret.Secret) error {
	var cur map[string]string
	var ver int
	if priv.Empty() {
		var err error
		cur, ver, err = e.cfg.Keys.Get(ctx, p.VaultPath)
		if err != nil && !isNotExist(err) {
			return fmt.Errorf("read %s: %w", p.VaultPath, err)
		}
	}
	if cur[fieldRotationID] == r.ID {
		// Promoted before a crash; only the journal is behind.
		r.VaultVersion = ver
	} else {
		pending := e.pendingData(p, r, priv)
		if priv.Empty() {
			var err error
			if pending, err = e.readPending(ctx, p, r); err != nil {
				return err
			}
			if pending == nil {
				return fmt.Errorf("%s: %w", PendingPath(p.VaultPath), ErrPendingLost)
			}
		}
		pending[fieldKeyID] = r.KeyID
		e.cfg.Hook("before:promote")
		v, err := e.cfg.Keys.Put(ctx, p.VaultPath, pending, r.VaultVersion)
		if err != nil {
			v, err = e.promoteOverChange(ctx, p, r, pending, err)
		}
		if err != nil {
			return err
		}
		e.cfg.Hook("after:promote")
		r.VaultVersion = v
	}
	if err := e.cfg.Keys.Delete(ctx, PendingPath(p.VaultPath)); err != nil {
		return fmt.Errorf("delete %s: %w", PendingPath(p.VaultPath), err)
	}
	return e.finish(p, r)
}

// promoteOverChange handles a failed check-and-set write of <vault_path>:
// its current version is not the one rotatord last wrote (someone wrote it
// by hand, or it holds a key rotatord no longer has a record of). The key
// being promoted is already the one the provider hands out, so Vault must
// hold it; the other write stays readable as the previous version. Any
// other failure (Vault sealed, unreachable) is returned as is.
func (e *Engine) promoteOverChange(ctx context.Context, p policy.Policy, r *state.Rotation, data map[string]string, putErr error) (int, error) {
	_, cur, err := e.cfg.Keys.Get(ctx, p.VaultPath)
	if err != nil && !isNotExist(err) || cur == r.VaultVersion {
		return 0, fmt.Errorf("write %s (check-and-set on version %d): %w", p.VaultPath, r.VaultVersion, putErr)
	}
	e.log.Warn("vault path was written since rotatord last wrote it; writing over it (the other write stays readable as the previous version)",
		"policy", p.Name, "rotation_id", r.ID, "path", p.VaultPath, "expected_version", r.VaultVersion, "found_version", cur)
	v, err := e.cfg.Keys.Put(ctx, p.VaultPath, data, cur)
	if err != nil {
		return 0, fmt.Errorf("write %s (check-and-set on version %d, after it moved from %d): %w", p.VaultPath, cur, r.VaultVersion, err)
	}
	return v, nil
}

// finish (step 7 + 8): the new key becomes the policy's active record, every
// key it replaces starts its grace period, and the outcome is audited and
// queued for Slack — all in one transaction.
func (e *Engine) finish(p policy.Policy, r *state.Rotation) error {
	now := e.cfg.Now()
	grace := p.GracePeriod
	if r.Emergency {
		grace = 0
	}
	deadline := now.Add(grace)
	err := e.step(p, r, state.StepDone, func(tx *txn) error {
		recs, err := tx.Keys(p.Name)
		if err != nil {
			return err
		}
		for _, k := range recs {
			switch {
			case k.KeyID == r.KeyID:
				k.Status = state.KeyActive
				k.ActivatedAt = now
				k.VaultVersion = r.VaultVersion
			case k.Status == state.KeyActive:
				k.Status = state.KeyRetiring
				k.DeleteAfter = deadline
			case k.Status == state.KeyRetiring && r.Emergency:
				k.DeleteAfter = deadline
			default:
				continue
			}
			if err := tx.PutKey(k); err != nil {
				return err
			}
		}
		// The run's success is recorded here, in the same commit.
		if err := tx.applyOutcome(now, true, nil, r.ID, r.KeyID, r.KeyName, r.Fingerprint, r.Trigger); err != nil {
			return err
		}
		detail := r.Reason
		if r.Emergency {
			detail += " (emergency: replaced key deleted now)"
		}
		event := audit.EventRotated
		if r.Emergency {
			event = audit.EventEmergency
		}
		if err := tx.audit(audit.Entry{Event: event, Trigger: r.Trigger, KeyID: r.KeyID, KeyName: r.KeyName, Fingerprint: r.Fingerprint,
			OldKeyID: r.OldKeyID, OldFingerprint: r.OldFingerprint, RotationID: r.ID,
			VaultPath: p.VaultPath, VaultVersion: r.VaultVersion, Detail: detail}); err != nil {
			return err
		}
		ev := e.event(p, policy.EventRotated, now)
		ev.KeyName, ev.KeyID, ev.NewFingerprint = r.KeyName, r.KeyID, r.Fingerprint
		ev.OldKeyID, ev.OldFingerprint = r.OldKeyID, r.OldFingerprint
		if r.OldKeyID != "" {
			ev.GraceDeadline = deadline
		}
		ev.Detail = detail
		return tx.notify(ev)
	})
	if err != nil {
		return err
	}
	e.log.Info("rotated", "policy", p.Name, "rotation_id", r.ID, "key_id", r.KeyID, "fingerprint", r.Fingerprint, "vault_version", r.VaultVersion)
	return nil
}
