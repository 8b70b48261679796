package bolt

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/state"
)

// BenchmarkAudit_ExportVerify measures the audit commands end to end over
// a bbolt state of 1,000,000 sealed entries (ROTATORD_BENCH_AUDIT_N):
// export reads every entry through the Store and writes JSONL; verify
// reads them through the Store and checks the chain and every HMAC. It
// prints entries/s against the bounds of issue 14 (export >= 200,000/s,
// verify >= 100,000/s). It measures once: b.N does not apply.
func BenchmarkAudit_ExportVerify(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("ROTATORD_BENCH_AUDIT_N")); err == nil && v > 0 {
		n = v
	}
	key, err := audit.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "state.db")
	be, err := Open(path, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	// Fill through the KV in big transactions: a realistic entry each,
	// sealed in a chain exactly as AppendAudit would.
	c := audit.NewChain(audit.Genesis, key)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for done := 0; done < n; {
		if err := be.Update(func(kv state.KV) error {
			for i := 0; i < 100_000 && done < n; i, done = i+1, done+1 {
				e := c.Append(audit.Entry{
					Time: t0.Add(time.Duration(done) * time.Minute), Policy: fmt.Sprintf("policy-%03d", done%500),
					Provider: "sesterce-prod", Event: audit.EventRotated, Trigger: "schedule",
					KeyID: "65f1a0c0ffee0000000000a1", KeyName: "policy-20260101T030000",
					Fingerprint: "SHA256:2sMS4fv17uc568jzZhJBtF2suxO4jhYrsyzAwT7C2SQ", RotationID: "r-20260101T030000-0a1b2c3d",
					VaultPath: "ssh/sesterce/policy", VaultVersion: 7, Detail: "key is 83d old, due at 2026-01-01T03:00:00Z",
				})
				v, err := json.Marshal(e)
				if err != nil {
					return err
				}
				if err := kv.Put("audit", binary.BigEndian.AppendUint64(nil, e.Seq), v); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	s, err := state.Open(be)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()

	start := time.Now()
	w, _ := audit.NewWriter(io.Discard, audit.FormatJSONL)
	exported := 0
	if err := s.View(func(tx state.Tx) error {
		return tx.ForEachAudit(func(e state.AuditEntry) error { exported++; return w.Write(&e) })
	}); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	exportRate := float64(exported) / time.Since(start).Seconds()

	start = time.Now()
	v := audit.NewVerifier(audit.VerifyOptions{Key: key})
	if err := s.View(func(tx state.Tx) error { return tx.ForEachAudit(v.Add) }); err != nil {
		b.Fatal(err)
	}
	res, err := v.Finish()
	if err != nil || res.Entries != n || !res.HMACChecked {
		b.Fatalf("verify: %+v, %v", res, err)
	}
	verifyRate := float64(n) / time.Since(start).Seconds()
	b.ReportMetric(exportRate, "export-entries/s")
	b.ReportMetric(verifyRate, "verify-entries/s")
	fmt.Fprintf(os.Stderr, "\naudit log of %d entries in bbolt:\n  export (Store -> JSONL)  %.0f entries/s = %.2f x the 200,000/s bound\n  verify (Store, HMACs)    %.0f entries/s = %.2f x the 100,000/s bound\n",
		n, exportRate, exportRate/200_000, verifyRate, verifyRate/100_000)
}
