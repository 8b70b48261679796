package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/policy"
)

func TestEngine_FirstRunCreatesOneKeyPerProvider(t *testing.T) {
	h := newHarness(t)
	// A key a human uploaded before rotatord: it must stay untouched.
	human := h.fake.AddSesterceKey("alice-laptop", mustPub(t), true)
	ps := []policy.Policy{sestercePolicy(), gcorePolicy()}
	results := h.engine.RunAll(context.Background(), ps, rotate.Options{Trigger: rotate.TriggerCLI})
	for _, res := range results {
		if res.Err != nil || !res.Rotated {
			t.Fatalf("%s: rotated=%v err=%v", res.Policy, res.Rotated, res.Err)
		}
	}
	for _, p := range ps {
		if n := len(h.managedKeys(p)); n != 1 {
			t.Errorf("%s: provider holds %d rotatord keys, want 1", p.Name, n)
		}
		h.assertConverged(p)
	}
	for _, k := range h.fake.SesterceKeys() {
		if k.ID == human.ID && k.IsDefault {
			t.Errorf("the human key is still default; the new rotatord key should be")
		}
	}
	if n := len(h.fake.SesterceKeys()); n != 2 {
		t.Errorf("sesterce holds %d keys, want 2 (alice-laptop untouched + the new one)", n)
	}
	// A second run the same day changes nothing.
	for _, p := range ps {
		res := h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule})
		if res.Rotated {
			t.Errorf("%s: rotated again on a fresh key", p.Name)
		}
		if !strings.HasPrefix(res.Reason, "key is fresh") {
			t.Errorf("%s: reason %q, want 'key is fresh...'", p.Name, res.Reason)
		}
	}
	if got := countKind(h.events(), "rotated"); got != 2 {
		t.Errorf("%d rotated events queued, want 2", got)
	}
}

func TestEngine_RotationKeepsOldKeyThroughGracePeriod(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.mustRun(p, rotate.Options{})
	old := h.assertConverged(p)
	oldData, oldVersion, _ := h.vaultKey(p.VaultPath)

	h.clock.Advance(24 * 24 * time.Hour) // past max_age - rotate_before (23d)
	res := h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule})
	if !res.Rotated {
		t.Fatalf("a 24-day-old key was not rotated: %s", res.Reason)
	}
	cur := h.assertConverged(p)
	if cur.ID == old.ID {
		t.Fatal("the current key did not change")
	}
	// During the grace period the old key is still on the provider and the
	// previous Vault version still readable.
	if !hasKey(h.providerKeys(p), old.ID) {
		t.Fatal("old key deleted before its grace period ended")
	}
	prev, err := h.store.GetVersion(context.Background(), p.VaultPath, oldVersion)
	if err != nil || prev["private_key"] != oldData["private_key"] {
		t.Fatalf("previous Vault version %d not readable during the grace period: %v", oldVersion, err)
	}

	h.clock.Advance(23 * time.Hour)
	if del, err := h.engine.Sweep(context.Background(), p); err != nil || len(del) != 0 {
		t.Fatalf("sweep inside the grace period deleted %v (err %v)", del, err)
	}
	h.clock.Advance(2 * time.Hour)
	del, err := h.engine.Sweep(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(del) != 1 || del[0] != old.ID {
		t.Fatalf("sweep after the grace period deleted %v, want [%s]", del, old.ID)
	}
	if hasKey(h.providerKeys(p), old.ID) {
		t.Fatal("old key still on the provider after the sweep")
	}
	h.assertConverged(p)
	if got := countKind(h.events(), "deleted"); got != 1 {
		t.Errorf("%d deleted events, want 1", got)
	}
}

func TestEngine_EmergencyDeletesOldKeyAtOnce(t *testing.T) {
	h := newHarness(t)
	for _, p := range []policy.Policy{sestercePolicy(), gcorePolicy()} {
		h.mustRun(p, rotate.Options{})
		old := h.assertConverged(p)
		res := h.mustRun(p, rotate.Options{Emergency: true, Trigger: rotate.TriggerCLI})
		if !res.Rotated || len(res.Deleted) != 1 || res.Deleted[0] != old.ID {
			t.Fatalf("%s: emergency rotation: rotated=%v deleted=%v, want the old key %s deleted", p.Name, res.Rotated, res.Deleted, old.ID)
		}
		if keys := h.managedKeys(p); len(keys) != 1 {
			t.Fatalf("%s: %d rotatord keys after an emergency rotation, want 1", p.Name, len(keys))
		}
		h.assertConverged(p)
	}
}

func TestEngine_VaultSealedUploadsNothing(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.mustRun(p, rotate.Options{})
	old := h.assertConverged(p)
	creates := h.fake.Requests(cloudtest.RouteSesterceCreate)

	h.store.Seal()
	res := h.run(p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "sealed") {
		t.Fatalf("run with a sealed Vault: err = %v, want one that says sealed", res.Err)
	}
	if got := h.fake.Requests(cloudtest.RouteSesterceCreate); got != creates {
		t.Fatalf("%d key uploads while Vault was sealed, want 0", got-creates)
	}
	keys := h.providerKeys(p)
	if len(keys) != 1 || keys[0].ID != old.ID || !keys[0].Default {
		t.Fatalf("provider keys changed while Vault was sealed: %+v", keys)
	}

	h.store.Unseal()
	res = h.mustRun(p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	if !res.Rotated {
		t.Fatal("no rotation after Vault was unsealed")
	}
	h.assertConverged(p)
	evs := h.events()
	if countKind(evs, "failed") != 1 || countKind(evs, "recovered") != 1 {
		t.Errorf("events: failed=%d recovered=%d, want 1 and 1", countKind(evs, "failed"), countKind(evs, "recovered"))
	}
}

func TestEngine_ProviderStormsConverge(t *testing.T) {
	h := newHarness(t)
	ps := []policy.Policy{sestercePolicy(), gcorePolicy()}
	h.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultStatus, Status: 503, Rate: 0.3})
	h.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultRateLimit, RetryAfter: time.Millisecond, Rate: 0.2})
	h.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultCommitThenDrop, Count: 1})
	h.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultCommitThenDrop, Count: 1})
	for _, p := range ps {
		var res rotate.Result
		for attempt := 0; attempt < 20; attempt++ {
			if res = h.run(p, rotate.Options{Trigger: rotate.TriggerSchedule}); res.Err == nil {
				break
			}
			h.clock.Advance(time.Second) // past the (1ms) backoff
		}
		if res.Err != nil {
			t.Fatalf("%s did not converge through the storm: %v", p.Name, res.Err)
		}
	}
	h.fake.ClearFaults()
	for _, p := range ps {
		if n := len(h.managedKeys(p)); n != 1 {
			t.Errorf("%s: %d rotatord keys after the storm, want exactly 1", p.Name, n)
		}
		h.assertConverged(p)
	}
}

func TestEngine_UnauthorizedFailsFast(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.provs["sesterce-test"] = h.client(policy.TypeSesterce, "wrong-key")
	h.engine = h.newEngine()
	before := h.fake.Requests(cloudtest.RouteSesterceList)
	res := h.run(p, rotate.Options{})
	if !errors.Is(res.Err, cloud.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", res.Err)
	}
	if !strings.Contains(res.Err.Error(), "API key invalid") {
		t.Errorf("err = %q, want the provider's message", res.Err)
	}
	if n := h.fake.Requests(cloudtest.RouteSesterceList) - before; n != 1 {
		t.Errorf("%d list requests, want 1 (no retries on 401/403)", n)
	}
	// Repeated failures: failed once, failing once at max_failures.
	for i := 0; i < 4; i++ {
		h.clock.Advance(time.Second)
		h.run(p, rotate.Options{})
	}
	evs := h.events()
	if countKind(evs, "failed") != 1 || countKind(evs, "failing") != 1 {
		t.Errorf("after 5 failures: failed=%d failing=%d events, want 1 and 1", countKind(evs, "failed"), countKind(evs, "failing"))
	}
	var st state.PolicyStatus
	_ = h.db.View(func(tx state.Tx) (err error) { st, err = tx.PolicyStatus(p.Name); return })
	if st.ConsecutiveFailures != 5 || !st.Failing {
		t.Errorf("status = %+v, want 5 failures and failing", st)
	}
}

func TestEngine_GcoreProviderGeneratedKey(t *testing.T) {
	h := newHarness(t)
	p := gcorePolicy()
	p.Key.Generate = policy.GenerateProvider
	res := h.mustRun(p, rotate.Options{})
	if !res.Rotated {
		t.Fatal("not rotated")
	}
	h.assertConverged(p)
	// Lost response: the fake creates the key but the answer (and its
	// private half) never arrives. The engine must not keep that key.
	h.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultCommitThenDrop, Count: 1})
	for i := 0; i < 5; i++ {
		if res = h.run(p, rotate.Options{Force: true}); res.Err == nil {
			break
		}
		h.clock.Advance(time.Second)
	}
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	h.assertConverged(p)
	// The first key (retiring) and the new one; the key whose private half
	// was lost with the response is gone.
	if n := len(h.managedKeys(p)); n != 2 {
		t.Fatalf("%d rotatord keys on Gcore, want 2 (retiring + current)", n)
	}
}

func TestEngine_ReconcileOutOfBand(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.mustRun(p, rotate.Options{})
	cur := h.assertConverged(p)

	// Someone deletes the current key in the console, and a crash left a
	// rotatord-named key with no record.
	if err := h.provs[p.Provider].Delete(context.Background(), 0, cur.ID); err != nil {
		t.Fatal(err)
	}
	orphan := h.fake.AddSesterceKey(p.KeyName(h.clock.Now().Add(-time.Hour)), mustPub(t), false)
	unmanaged := h.fake.AddSesterceKey("bob", mustPub(t), false)

	res := h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule})
	if !res.Rotated || !strings.Contains(res.Reason, "missing") {
		t.Fatalf("rotated=%v reason=%q, want a rotation because the key went missing", res.Rotated, res.Reason)
	}
	h.assertConverged(p)
	if countKind(h.events(), "failed") != 1 {
		t.Error("no alert for the key deleted out of band")
	}
	h.clock.Advance(p.GracePeriod + time.Minute)
	del, err := h.engine.Sweep(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(del) != 1 || del[0] != orphan.ID {
		t.Fatalf("sweep deleted %v, want only the orphan %s", del, orphan.ID)
	}
	if !hasKey(h.providerKeys(p), unmanaged.ID) {
		t.Fatal("an unmanaged key was deleted")
	}
}

func TestEngine_SingleFlight(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.mustRun(p, rotate.Options{})

	// A slow provider keeps one run in flight.
	h.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultLatency, Delay: 300 * time.Millisecond, Count: 1})
	var wg sync.WaitGroup
	results := make([]rotate.Result, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.run(p, rotate.Options{Force: true, Wait: true, Trigger: rotate.TriggerSignal})
		}()
	}
	time.Sleep(50 * time.Millisecond)
	busy := h.run(p, rotate.Options{Trigger: rotate.TriggerSchedule})
	wg.Wait()
	if !errors.Is(busy.Err, rotate.ErrBusy) {
		t.Errorf("scheduled run during a rotation: err = %v, want ErrBusy", busy.Err)
	}
	for _, r := range results {
		if r.Err != nil || !r.Rotated {
			t.Fatalf("forced run: rotated=%v err=%v", r.Rotated, r.Err)
		}
	}
	if results[0].KeyID == results[1].KeyID {
		t.Fatal("two triggers produced one key; want one new key each, one after the other")
	}
	if n := len(h.managedKeys(p)); n != 3 {
		t.Fatalf("%d rotatord keys, want 3 (first + one per forced trigger)", n)
	}
	h.assertConverged(p)
}

func TestEngine_PlanChangesNothing(t *testing.T) {
	h := newHarness(t)
	ps := []policy.Policy{sestercePolicy(), gcorePolicy()}
	h.mustRun(ps[0], rotate.Options{})
	h.clock.Advance(24 * 24 * time.Hour)
	h.fake.AddSesterceKey(ps[0].KeyName(h.clock.Now().Add(-time.Hour)), mustPub(t), false)

	snapshot := func() string {
		var b strings.Builder
		for _, k := range h.fake.SesterceKeys() {
			b.WriteString(k.ID + k.Name + boolStr(k.IsDefault) + ";")
		}
		for _, k := range h.fake.GcoreKeys(gcoreProject) {
			b.WriteString(k.ID + k.Name + ";")
		}
		for _, p := range ps {
			for _, path := range []string{p.VaultPath, rotate.PendingPath(p.VaultPath)} {
				d, v, err := h.store.Get(context.Background(), path)
				b.WriteString(path + d["fingerprint"] + strings.Repeat("v", v) + errStr(err) + ";")
			}
		}
		return b.String()
	}
	before := snapshot()
	dbBefore, _ := os.ReadFile(h.dbPath)
	creates := h.fake.Requests(cloudtest.RouteSesterceCreate) + h.fake.Requests(cloudtest.RouteGcoreCreate)

	var plans []rotate.PolicyPlan
	for _, p := range ps {
		pp, err := h.engine.Plan(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		plans = append(plans, pp)
	}
	if snapshot() != before {
		t.Fatal("plan changed the provider or Vault")
	}
	dbAfter, _ := os.ReadFile(h.dbPath)
	if string(dbBefore) != string(dbAfter) {
		t.Fatal("plan changed the state file")
	}
	if got := h.fake.Requests(cloudtest.RouteSesterceCreate) + h.fake.Requests(cloudtest.RouteGcoreCreate); got != creates {
		t.Fatal("plan sent a create request")
	}
	kinds := func(pp rotate.PolicyPlan) string {
		var k []string
		for _, a := range pp.Actions {
			k = append(k, a.Kind)
		}
		return strings.Join(k, ",")
	}
	if got, want := kinds(plans[0]), "orphan,create,make_default,promote,retire"; got != want {
		t.Errorf("sesterce plan actions = %s, want %s", got, want)
	}
	if got, want := kinds(plans[1]), "create,promote"; got != want {
		t.Errorf("gcore plan actions = %s, want %s", got, want)
	}
}

func TestEngine_NoPrivateKeyInStateOrLogs(t *testing.T) {
	h := newHarness(t)
	for _, p := range []policy.Policy{sestercePolicy(), gcorePolicy()} {
		h.mustRun(p, rotate.Options{})
		h.mustRun(p, rotate.Options{Force: true})
	}
	h.store.Seal()
	h.run(sestercePolicy(), rotate.Options{Force: true}) // an error path too
	h.store.Unseal()
	var bodies []string
	for _, p := range []policy.Policy{sestercePolicy(), gcorePolicy()} {
		data, _, _ := h.vaultKey(p.VaultPath)
		lines := strings.Split(data["private_key"], "\n")
		bodies = append(bodies, lines[1], lines[2]) // PEM body lines
	}
	h.db.Close()
	raw, err := os.ReadFile(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, haystack := range []struct{ name, text string }{{"state file", string(raw)}, {"logs", h.logs.String()}} {
		if strings.Contains(haystack.text, "PRIVATE KEY") {
			t.Errorf("%s contains a PEM header", haystack.name)
		}
		for _, b := range bodies {
			if strings.Contains(haystack.text, b) {
				t.Errorf("%s contains private key bytes", haystack.name)
			}
		}
	}
}

func hasKey(keys []cloud.Key, id string) bool {
	for _, k := range keys {
		if k.ID == id {
			return true
		}
	}
	return false
}

func boolStr(b bool) string {
	if b {
		return "*"
	}
	return ""
}

func errStr(err error) string {
	if err != nil {
		return "!"
	}
	return ""
}

func TestEngine_RunAllListsEachAccountOnce(t *testing.T) {
	h := newHarness(t)
	var ps []policy.Policy
	for i := 0; i < 4; i++ {
		s := sestercePolicy()
		s.Name, s.NamePrefix, s.VaultPath = fmt.Sprintf("s%d", i), fmt.Sprintf("s%d", i), fmt.Sprintf("ssh/s/%d", i)
		s.MakeDefault = i == 0
		g := gcorePolicy()
		g.Name, g.NamePrefix, g.VaultPath = fmt.Sprintf("g%d", i), fmt.Sprintf("g%d", i), fmt.Sprintf("ssh/g/%d", i)
		ps = append(ps, s, g)
	}
	for _, res := range h.engine.RunAll(context.Background(), ps, rotate.Options{}) {
		if res.Err != nil || !res.Rotated {
			t.Fatalf("%s: rotated=%v err=%v", res.Policy, res.Rotated, res.Err)
		}
	}
	// One listing per account, plus Sesterce's check after makedefault.
	if got := h.fake.Requests(cloudtest.RouteSesterceList); got != 2 {
		t.Errorf("%d Sesterce list requests for 4 policies, want 2 (one listing + one default check)", got)
	}
	if got := h.fake.Requests(cloudtest.RouteGcoreList); got != 1 {
		t.Errorf("%d Gcore list requests for 4 policies, want 1", got)
	}
	for _, p := range ps {
		if p.MakeDefault || p.ProviderType == policy.TypeGcore {
			h.assertConverged(p)
		}
	}
}

func TestEngine_OverdueAlertsOnceAndOnlyWhenNotRotated(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.mustRun(p, rotate.Options{})

	// 31 days later (max_age 30d) the run rotates: no overdue alert for
	// the key it just replaced.
	h.clock.Advance(31 * 24 * time.Hour)
	if res := h.mustRun(p, rotate.Options{}); !res.Rotated {
		t.Fatal("an overdue key was not rotated")
	}
	if n := countKind(h.events(), "overdue"); n != 0 {
		t.Fatalf("%d overdue alerts after a successful rotation, want 0", n)
	}

	// 31 more days with the provider refusing uploads: overdue, once.
	h.clock.Advance(31 * 24 * time.Hour)
	h.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultStatus, Status: 400})
	for i := 0; i < 3; i++ {
		h.run(p, rotate.Options{})
		h.clock.Advance(time.Minute)
	}
	if n := countKind(h.events(), "overdue"); n != 1 {
		t.Fatalf("%d overdue alerts over 3 failed runs, want exactly 1", n)
	}
}

// TestEngine_PromoteOverAVaultWrite: the promotion's check-and-set guard
// is the version rotatord last wrote, so a hand write of <vault_path>
// between two rotations is caught as surely as one during a rotation.
// Either way Vault ends holding the key the provider hands out, with the
// hand write as the previous version, and a warning says so.
func TestEngine_PromoteOverAVaultWrite(t *testing.T) {
	for _, when := range []string{"during the rotation", "before the rotation"} {
		t.Run(when, func(t *testing.T) {
			h := newHarness(t)
			p := sestercePolicy()
			h.mustRun(p, rotate.Options{})
			manual := func() {
				if _, err := h.store.Put(context.Background(), p.VaultPath, map[string]string{"note": "manual"}, -1); err != nil {
					t.Error(err)
				}
			}
			if when == "before the rotation" {
				manual()
			} else {
				// Someone writes <vault_path> by hand while the next rotation uploads.
				h.hook = func(point string) {
					if point == "after:upload" {
						h.hook = nil
						manual()
					}
				}
			}
			res := h.mustRun(p, rotate.Options{Force: true})
			if !res.Rotated {
				t.Fatal("not rotated")
			}
			_, v, _ := h.vaultKey(p.VaultPath)
			h.assertConverged(p) // Vault holds the key the provider hands out
			prev, err := h.store.GetVersion(context.Background(), p.VaultPath, v-1)
			if err != nil || prev["note"] != "manual" {
				t.Fatalf("the manual write is not the previous version: %v %v", prev, err)
			}
			if !strings.Contains(h.logs.String(), "vault path was written since rotatord last wrote it") {
				t.Error("no warning about the overwritten manual write")
			}
		})
	}
}

func TestEngine_AdoptsKeysAfterStateLoss(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.mustRun(p, rotate.Options{})
	cur := h.assertConverged(p)

	// The state file is lost (disk replaced, no backup).
	path := h.dbPath
	h.db.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	var err error
	if h.db, err = bolt.OpenStore(path, bolt.Options{AuditKeys: testAuditKeys}); err != nil {
		t.Fatal(err)
	}
	h.engine = h.newEngine()
	creates := h.fake.Requests(cloudtest.RouteSesterceCreate)
	res := h.mustRun(p, rotate.Options{})
	if res.Rotated || h.fake.Requests(cloudtest.RouteSesterceCreate) != creates {
		t.Fatalf("rotated=%v after state loss; want the key in Vault taken back, no new key", res.Rotated)
	}
	if got := h.assertConverged(p); got.ID != cur.ID {
		t.Fatalf("active key %s, want the adopted %s", got.ID, cur.ID)
	}
}

func TestEngine_AdoptsAnUploadWhoseJournalWasLost(t *testing.T) {
	h := newHarness(t)
	p := sestercePolicy()
	h.mustRun(p, rotate.Options{})
	old := h.assertConverged(p)

	// What a crash between upload and journal leaves when the journal entry
	// is gone too: the private half pending in Vault, the key uploaded.
	k, err := keygen.Generate(keygen.Spec{Type: keygen.TypeED25519}, keygen.Comment(p.Name))
	if err != nil {
		t.Fatal(err)
	}
	name := p.KeyName(h.clock.Now().Add(time.Hour))
	if _, err := h.store.Put(context.Background(), rotate.PendingPath(p.VaultPath), map[string]string{
		"private_key": k.PrivateKey.Reveal(), "public_key": k.PublicKey, "fingerprint": k.SHA256,
		"key_name": name, "rotation_id": "r-lost-journal", "policy": p.Name,
	}, -1); err != nil {
		t.Fatal(err)
	}
	uploaded := h.fake.AddSesterceKey(name, k.PublicKey, false)
	creates := h.fake.Requests(cloudtest.RouteSesterceCreate)

	h.mustRun(p, rotate.Options{})
	cur := h.assertConverged(p)
	if cur.ID != uploaded.ID {
		t.Fatalf("active key %s, want the adopted upload %s", cur.ID, uploaded.ID)
	}
	if h.fake.Requests(cloudtest.RouteSesterceCreate) != creates {
		t.Fatal("a new key was created instead of finishing the adopted one")
	}
	if !hasKey(h.providerKeys(p), old.ID) {
		t.Fatal("the replaced key was deleted before its grace period")
	}
}
