package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/internal/vault"
)

// TestSoak runs the daemon over many policies against a provider that
// fails 10 % of requests with 503, 5 % with 429 and hangs 1 %, SIGKILLs it
// twice, and goes on until every policy has rotated three times. Then it
// checks every promise of DESIGN.md §3 and prints the counts.
//
// `make soak` runs 500 policies (ROTATORD_SOAK_POLICIES); `make test` runs
// 40.
func TestSoak(t *testing.T) {
	needSetup(t)
	n := envInt("ROTATORD_SOAK_POLICIES", 40)
	const rounds = 3
	budget := time.Duration(n/10+60) * time.Second
	seed := time.Now().UnixNano() % 1_000_000
	fake := startFakecloud(t, []string{sesterceKey}, "-latency", "5ms", "-seed", strconv.FormatInt(seed, 10),
		"-error-rate", "0.10", "-error-status", "503", "-rate-limit-rate", "0.05", "-retry-after", "1s", "-hang-rate", "0.01")
	// Keys fall due 5 s after creation, schedules fire every 3 s, retired
	// keys go after 5 s; a provider request gives up after 2 s.
	s := newSetup(t, fake, n, ", schedule: '@every 3s', max_age: 1h, rotate_before: 59m55s, grace_period: 5s",
		", rate_limit: 100000, timeout: 2s")
	env := []string{"ROTATORD_BACKOFF_BASE=1s", "ROTATORD_SWEEP_INTERVAL=1s"}
	store, err := vault.New(context.Background(), vault.Config{Address: vaultSrv.Addr, Mount: "secret", Auth: vault.Auth{Token: vaultSrv.RootToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	t.Logf("soak: %d policies, fault seed %d", n, seed)

	rotated := map[string]int{} // by policy, over the daemons that have ended
	var logs []string
	count := func(d *daemon) {
		for k, v := range rotationsIn(d.log()) {
			rotated[k] += v
		}
		logs = append(logs, d.log())
	}
	progress := func(d *daemon) (total, done int) {
		cur := rotationsIn(d.log())
		for _, name := range s.names {
			c := rotated[name] + cur[name]
			total += min(c, rounds)
			if c >= rounds {
				done++
			}
		}
		return total, done
	}

	start := time.Now()
	d := s.startDaemon(t, env...)
	restarts := 0
	for {
		total, done := progress(d)
		if done == n {
			break
		}
		if time.Since(start) > budget {
			t.Fatalf("after %v only %d of %d policies rotated %d times", budget, done, n, rounds)
		}
		if restarts < 2 && total >= (restarts+1)*n*rounds/3 {
			_ = d.cmd.Process.Signal(syscall.SIGKILL)
			<-d.done
			count(d)
			restarts++
			s.assertPrivateHalvesInVault(t, store, fake, fmt.Sprintf("after SIGKILL #%d", restarts))
			d = s.startDaemon(t, env...)
			continue
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
	count(d)
	elapsed := time.Since(start)
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("daemon exit %d after SIGTERM", code)
	}
	var faults map[string]int
	fake.getJSON(t, "/admin/faults-met", &faults)

	// Calm weather: no faults, nothing due; let the grace periods pass and
	// sweep twice (orphans found by the first sweep get a grace period).
	fake.setFaults(t, "[]")
	calm := strings.Replace(mustRead(t, s.cfgPath), "rotate_before: 59m55s", "rotate_before: 1m", -1)
	if err := os.WriteFile(s.cfgPath, []byte(calm), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		time.Sleep(5500 * time.Millisecond)
		if _, stderr, _, _, code := s.rotatord(t, nil, "run", "-config", s.cfgPath, "-once"); code != 0 {
			t.Fatalf("final run -once: exit %d\n%s", code, tail(stderr, 3000))
		}
	}
	lost := s.checkPromises(t, store, fake)

	retries := 0
	for _, l := range logs {
		retries += strings.Count(l, "retrying provider request")
	}
	total := 0
	for _, v := range rotated {
		total += v
	}
	fmt.Fprintf(os.Stderr, `
soak: %d policies, faults 10%% 503 / 5%% 429 / 1%% hang, 2 SIGKILLs, until every policy rotated %d times
  elapsed          %v
  rotations        %d (logged; a rotation finished just before a SIGKILL may go unlogged)
  retries          %d provider requests retried
  faults met       %v
  restarts         %d (SIGKILL)
  keys lost        %d
`, n, rounds, elapsed.Round(time.Second), total, retries, faults, restarts, lost)
}

// rotationsIn counts the "rotated" log lines of a daemon by policy.
func rotationsIn(log string) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct{ Msg, Policy string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "rotated" {
			out[l.Policy]++
		}
	}
	return out
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// vaultFingerprints returns the fingerprint of <path> now, and of every
// version of it and of its pending path.
func vaultFingerprints(t *testing.T, store *vault.Store, path string) (current string, all map[string]bool) {
	t.Helper()
	ctx := context.Background()
	all = map[string]bool{}
	fp := func(data map[string]string) string {
		k, err := keygen.ParsePrivateKey(secret.Secret(data["private_key"]))
		if err != nil || k.SHA256 != data["fingerprint"] {
			t.Fatalf("%s: unusable private key (%v)", path, err)
		}
		return k.SHA256
	}
	if data, v, err := store.Get(ctx, path); err == nil {
		current = fp(data)
		for i := 1; i <= v; i++ {
			if d, err := store.GetVersion(ctx, path, i); err == nil {
				all[fp(d)] = true
			}
		}
	}
	if data, _, err := store.Get(ctx, path+"/pending"); err == nil {
		all[fp(data)] = true
	}
	return current, all
}

// managed groups the provider's keys by the policy that named them.
func (s *setup) managed(t *testing.T, fake *fakecloud) map[string][]adminKey {
	out := map[string][]adminKey{}
	for _, k := range fake.keys(t) {
		if i := strings.LastIndexByte(k.Name, '-'); i > 0 {
			out[k.Name[:i]] = append(out[k.Name[:i]], k)
		}
	}
	return out
}

// assertPrivateHalvesInVault: right after a SIGKILL, every key rotatord
// put on the provider has its private half in Vault.
func (s *setup) assertPrivateHalvesInVault(t *testing.T, store *vault.Store, fake *fakecloud, when string) {
	t.Helper()
	byPolicy := s.managed(t, fake)
	for _, name := range s.names {
		_, all := vaultFingerprints(t, store, s.prefix+"/"+name)
		for _, k := range byPolicy[name] {
			fp, err := fingerprint(k.PublicKey)
			if err != nil || !all[fp] {
				t.Errorf("%s: %s: provider key %s has no private half in Vault", when, name, k.Name)
			}
		}
	}
}

func fingerprint(pub string) (string, error) {
	sha, _, err := keygen.Fingerprints(pub)
	return sha, err
}

// checkPromises checks DESIGN.md §3 for every policy and returns how many
// policies lost their key (no usable active key).
func (s *setup) checkPromises(t *testing.T, store *vault.Store, fake *fakecloud) int {
	t.Helper()
	db, err := bolt.OpenStore(filepath.Join(s.dir, "state.db"), bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	byPolicy := s.managed(t, fake)
	lost := 0
	for i, name := range s.names {
		var active []state.KeyRecord
		var open []state.Rotation
		_ = db.View(func(tx state.Tx) error {
			recs, _ := tx.Keys(name)
			for _, r := range recs {
				if r.Status == state.KeyActive {
					active = append(active, r)
				}
			}
			open, _ = tx.OpenRotationsOf(name)
			return nil
		})
		current, _ := vaultFingerprints(t, store, s.prefix+"/"+name)
		keys := byPolicy[name]
		switch {
		case len(active) != 1:
			t.Errorf("%s: %d active keys in state", name, len(active))
			lost++
		case len(keys) != 1 || keys[0].ID != active[0].KeyID:
			t.Errorf("%s: provider holds %d rotatord keys past the grace period, want only the active %s", name, len(keys), active[0].KeyID)
		case active[0].Fingerprint != current:
			t.Errorf("%s: Vault holds %s, the active key is %s", name, current, active[0].Fingerprint)
			lost++
		case len(open) != 0:
			t.Errorf("%s: %d rotations still open", name, len(open))
		}
		if _, _, err := store.Get(context.Background(), s.prefix+"/"+name+"/pending"); err == nil {
			t.Errorf("%s: a pending key is left in Vault", name)
		}
		if i == 0 && len(keys) == 1 && !keys[0].IsDefault {
			t.Errorf("%s: its active key is not the Sesterce default", name)
		}
	}
	return lost
}
