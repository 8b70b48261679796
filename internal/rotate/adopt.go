package rotate

import (
	"context"
	"fmt"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// adopt takes back orphans whose private half is in Vault: they are keys
// rotatord made whose record was lost (a journal or state file lost or
// restored from an old backup).
//
//   - The key at <vault_path> becomes the policy's active key again, when
//     the policy has none: nothing needs rotating.
//   - The key at <vault_path>/pending was uploaded by a rotation whose
//     journal entry is gone: that rotation is journaled again at its upload
//     step and driven to the end (activate, promote).
//
// Orphans with no private half anywhere stay orphans: deleted after the
// grace period. adopt returns how many keys it took back.
func (e *Engine) adopt(ctx context.Context, p policy.Policy, prov cloud.Provider, d Decision) (int, error) {
	current, curVer, err := e.cfg.Keys.Get(ctx, p.VaultPath)
	if err != nil && !isNotExist(err) {
		return 0, fmt.Errorf("read %s: %w", p.VaultPath, err)
	}
	pending, _, err := e.cfg.Keys.Get(ctx, PendingPath(p.VaultPath))
	if err != nil && !isNotExist(err) {
		return 0, fmt.Errorf("read %s: %w", PendingPath(p.VaultPath), err)
	}
	now := e.cfg.Now()
	adopted := 0
	for _, k := range d.Orphans {
		switch {
		case d.Current == nil && current != nil && k.Fingerprint != "" && current[fieldFinger] == k.Fingerprint:
			err = e.commit(p, func(tx *txn) error {
				if err := tx.PutKey(state.KeyRecord{
					Policy: p.Name, Provider: p.Provider, ProjectID: p.ProjectID,
					KeyID: k.ID, Name: k.Name, Fingerprint: k.Fingerprint, PublicKey: k.PublicKey,
					Status: state.KeyActive, RotationID: current[fieldRotationID], CreatedAt: k.CreatedAt,
					ActivatedAt: now, VaultVersion: curVer,
				}); err != nil {
					return err
				}
				return tx.audit(audit.Entry{Event: audit.EventKeyAdopted, Trigger: TriggerResume, KeyID: k.ID, KeyName: k.Name,
					Fingerprint: k.Fingerprint, RotationID: current[fieldRotationID], VaultPath: p.VaultPath, VaultVersion: curVer,
					Detail: "no record, but its private half is at " + p.VaultPath + ": active again"})
			})
			if err != nil {
				return adopted, fmt.Errorf("adopt key %s: %w", k.ID, err)
			}
			e.log.Warn("adopted a key with no record: its private half is the current Vault key", "policy", p.Name, "key_id", k.ID, "fingerprint", k.Fingerprint)
			d.Current = &state.KeyRecord{KeyID: k.ID}
			adopted++
		case pending != nil && k.Fingerprint != "" && pending[fieldFinger] == k.Fingerprint:
			r := &state.Rotation{
				ID: pending[fieldRotationID], Policy: p.Name, Provider: p.Provider, ProjectID: p.ProjectID,
				Step: state.StepPlanned, Reason: "adopted: uploaded by a rotation whose journal entry was lost",
				Trigger: TriggerResume, KeyName: k.Name, PublicKey: k.PublicKey, Fingerprint: k.Fingerprint,
				VaultVersion: curVer, StartedAt: now,
			}
			var exists bool
			if err := e.cfg.Journal.View(func(tx state.Tx) (err error) { _, exists, err = tx.Rotation(r.ID); return err }); err != nil {
				return adopted, err
			}
			if r.ID == "" || exists {
				r.ID = newRotationID(now)
			}
			if d.Current != nil {
				r.OldKeyID, r.OldFingerprint = d.Current.KeyID, d.Current.Fingerprint
			}
			if err := e.recordUploaded(p, r, k); err != nil {
				return adopted, fmt.Errorf("adopt key %s: %w", k.ID, err)
			}
			e.log.Warn("adopted an uploaded key with no journal entry: its private half is pending in Vault; finishing its rotation",
				"policy", p.Name, "key_id", k.ID, "rotation_id", r.ID)
			if err := e.advance(ctx, p, prov, r, ""); err != nil {
				return adopted, err
			}
			pending = nil
			adopted++
		}
	}
	return adopted, nil
}
