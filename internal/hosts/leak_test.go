package hosts

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer safe for the concurrent log writes of
// ConvergeAll.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// TestConverge_NoPrivateKeyLeaks runs every outcome (add, remove, denied,
// concurrent edit, host key changed, unverified, dry run) with debug
// logging, and greps the logs, every error, every result and every file on
// every host for the private keys' PEM bodies.
func TestConverge_NoPrivateKeyLeaks(t *testing.T) {
	f := newFleet(t, 6)
	var logs syncBuffer
	opts := f.opts()
	opts.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	keys := f.keys()
	var results []Result

	// 0-1: added then removed. 2: denied. 3: concurrent edit. 4: host key
	// changed. 5: unverified (current key restricted to another address).
	f.hosts[2].WriteAuthorizedKeys(t, []byte(f.others[0].line+"\n"), 0o600)
	f.hosts[5].WriteAuthorizedKeys(t, []byte(f.old.line+"\nfrom=\"192.0.2.1\" "+f.cur.line+"\n"), 0o600)
	results = append(results, Converge(context.Background(), targetOf(f.hosts[4]), keys, opts)) // pin
	f.srv.ChangeHostKey(f.hosts[4])

	dry := opts
	dry.DryRun = true
	results = append(results, ConvergeAll(context.Background(), f.targets(), keys, dry)...)

	h3 := f.hosts[3]
	edit := opts
	edit.beforeRename = func(target Target, _ string) {
		if target.Port == h3.Port {
			h3.WriteAuthorizedKeys(t, append(h3.ReadAuthorizedKeys(t), "# edited\n"...), 0o600)
		}
	}
	results = append(results, ConvergeAll(context.Background(), f.targets(), keys, edit)...)
	remove := opts
	remove.RemoveRetired = true
	results = append(results, ConvergeAll(context.Background(), f.targets(), keys, remove)...)

	seen := map[Status]bool{}
	var all bytes.Buffer
	all.Write(logs.Bytes())
	for _, r := range results {
		seen[r.Status] = true
		fmt.Fprintf(&all, "%v\n%+v\n%#v\n", r.Err, r, r)
	}
	for _, s := range []Status{StatusOK, StatusStale, StatusDenied, StatusHostKeyChanged, StatusUnverified} {
		if !seen[s] {
			t.Errorf("no host ended %s; the test does not cover it", s)
		}
	}
	if !bytes.Contains(all.Bytes(), []byte("added current key")) {
		t.Error("no log line for an added key; the logger was not used")
	}
	assertNoPrivateKey(t, "logs, errors and results", all.Bytes(), f.old, f.cur)
	for _, h := range f.hosts {
		_ = filepath.WalkDir(h.Home, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				data, _ := os.ReadFile(p)
				assertNoPrivateKey(t, p, data, f.old, f.cur)
			}
			return nil
		})
	}
}
