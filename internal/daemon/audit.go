package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// auditKeys holds the key that seals audit entries: loaded from Vault
// (created there on first use) and kept in memory only. The store asks
// for it without blocking; the engine's Ready loads it before a run does
// anything, and the Vault watch loads it as soon as Vault answers.
type auditKeys struct {
	ks audit.KeyStore // nil without Vault (plan, report)

	load sync.Mutex // one load at a time; never held by AuditKey
	mu   sync.Mutex
	key  audit.Key
	ok   bool
}

var _ state.AuditKeys = (*auditKeys)(nil)

// AuditKey returns the key if it was loaded.
func (k *auditKeys) AuditKey() (audit.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.ok {
		return audit.Key{}, fmt.Errorf("%w: not loaded from vault yet", state.ErrNoAuditKey)
	}
	return k.key, nil
}

// Load loads the key unless it is loaded. The Vault call happens outside
// the lock AuditKey takes, so state transactions never wait for Vault.
func (k *auditKeys) Load(ctx context.Context) error {
	k.load.Lock()
	defer k.load.Unlock()
	if _, err := k.AuditKey(); err == nil {
		return nil
	}
	if k.ks == nil {
		return fmt.Errorf("%w: no vault client", state.ErrNoAuditKey)
	}
	key, err := audit.LoadKey(ctx, k.ks)
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	k.mu.Lock()
	k.key, k.ok = key, true
	k.mu.Unlock()
	return nil
}

// auditPruneEvery is how often retention runs; entries live for months,
// so a day's lateness does not matter.
const auditPruneEvery = 24 * time.Hour

// auditPruneBatch bounds the entries one transaction deletes (etcd caps a
// transaction's operations).
const auditPruneBatch = 100

// pruneAudit deletes the entries older than the retention, keeping the
// chain verifiable with a checkpoint per batch.
func (a *App) pruneAudit(ctx context.Context) {
	before := time.Now().Add(-a.runtime().cfg.Audit.Retention)
	total := 0
	for ctx.Err() == nil {
		var n int
		err := a.db.Update(func(tx state.Tx) (err error) { n, err = tx.PruneAudit(before, auditPruneBatch); return err })
		if err != nil {
			if !errors.Is(err, state.ErrNoAuditKey) {
				a.log.Error("audit retention", "err", err)
			}
			return
		}
		total += n
		if n < auditPruneBatch {
			break
		}
	}
	if total > 0 {
		a.log.Info("audit entries past retention pruned", "entries", total, "before", before.UTC().Format(time.RFC3339))
	}
}

// auditDaemon appends an entry about the daemon itself (a reload); it is
// best effort: without the audit key the log line says it.
func (a *App) auditDaemon(e audit.Entry) {
	e.Time = time.Now()
	err := a.db.Update(func(tx state.Tx) error { return tx.AppendAudit(e) })
	if err != nil && !errors.Is(err, state.ErrNoAuditKey) && !errors.Is(err, state.ErrFenced) { // a standby writes nothing
		a.log.Error("audit "+e.Event, "err", err)
	}
}

// AuditExport writes the audit log to w in format (jsonl or csv), from the
// first entry at or after since (the whole log when zero). An export made
// with since starts mid-chain: verify it with -partial.
func (a *App) AuditExport(ctx context.Context, w io.Writer, req control.AuditExportRequest) error {
	if req.Format == "" {
		req.Format = audit.FormatJSONL
	}
	aw, err := audit.NewWriter(w, req.Format)
	if err != nil {
		return err
	}
	started := req.Since.IsZero()
	err = a.db.View(func(tx state.Tx) error {
		return tx.ForEachAudit(func(e state.AuditEntry) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			// From the first entry at or after since on, every entry: a
			// clock step must not leave a hole in the exported chain.
			if !started && e.Time.Before(req.Since) {
				return nil
			}
			started = true
			return aw.Write(&e)
		})
	})
	if err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	return aw.Flush()
}

// AuditVerify checks the live audit log: chain, checkpoints, every HMAC
// with the key from Vault, and the expected head when given. A broken log
// is not an error of the call: the result says where and why.
func (a *App) AuditVerify(ctx context.Context, req control.AuditVerifyRequest) (control.AuditVerifyResult, error) {
	opts, err := a.verifyOptions(ctx, req)
	if err != nil {
		return control.AuditVerifyResult{}, err
	}
	v := audit.NewVerifier(opts)
	err = a.db.View(func(tx state.Tx) error {
		return tx.ForEachAudit(func(e state.AuditEntry) error {
			if err := v.Add(e); err != nil && !errors.Is(err, audit.ErrBroken) {
				return err
			}
			return nil
		})
	})
	if err != nil {
		return control.AuditVerifyResult{}, fmt.Errorf("read audit log: %w", err)
	}
	res, err := v.Finish()
	return AuditResult(res, err), nil
}

func (a *App) verifyOptions(ctx context.Context, req control.AuditVerifyRequest) (audit.VerifyOptions, error) {
	var opts audit.VerifyOptions
	if req.ExpectHead != "" {
		h, err := audit.ParseHead(req.ExpectHead)
		if err != nil {
			return opts, fmt.Errorf("expected head %q: %w", req.ExpectHead, err)
		}
		opts.ExpectHead = &h
	}
	if err := a.audit.Load(ctx); err != nil {
		return opts, err
	}
	opts.Key, _ = a.audit.AuditKey()
	return opts, nil
}

// AuditResult turns a verification into what the socket carries.
func AuditResult(res audit.Result, err error) control.AuditVerifyResult {
	out := control.AuditVerifyResult{
		Entries: res.Entries, Head: res.Head.String(), HMACChecked: res.HMACChecked, HeadChecked: res.HeadChecked,
		Checkpoints: res.Checkpoints, UpgradedThrough: res.UpgradedThrough,
	}
	if res.Base != audit.Genesis && res.Base != (audit.Head{}) {
		out.Base = res.Base.String()
	}
	var broken *audit.BrokenError
	switch {
	case errors.As(err, &broken):
		out.Broken, out.BrokenSeq, out.BrokenReason = broken.Error(), broken.Seq, broken.Reason.String()
	case err != nil:
		out.Broken = err.Error()
	}
	return out
}

// LoadAuditKey reads the audit key from the Vault the config names, for
// commands that verify an export file without a daemon.
func LoadAuditKey(ctx context.Context, cfg *policy.Config, log *slog.Logger) (audit.Key, error) {
	a := &App{log: log}
	if err := a.openVault(ctx, cfg); err != nil {
		return audit.Key{}, err
	}
	defer a.vault.Close()
	return audit.LoadKey(ctx, a.vault)
}
