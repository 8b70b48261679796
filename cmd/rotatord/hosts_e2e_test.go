package main_test

import (
	"strings"
	"testing"
	"time"
)

// TestDaemon_Hosts: `rotatord run` keeps hosts converged on its own. A
// rotation through the socket puts the new key on every host; the retire
// sweep takes the old one off once its grace ends; status counts the hosts,
// the report lists them and -fail-on stale passes only once they converged.
func TestDaemon_Hosts(t *testing.T) {
	h := newHostsEnv(t, 3)
	d := h.startDaemon("ROTATORD_SWEEP_INTERVAL=200ms")
	_, firstFP := h.vaultSigners()

	if _, stderr, code := h.rotatord(nil, "rotate", "-config", h.cfgPath, "-all"); code != 0 {
		t.Fatalf("rotate: exit %d\n%s", code, stderr)
	}
	_, current := h.vaultSigners()
	if current == firstFP {
		t.Fatal("no new key")
	}
	// The grace is 1s: the sweep deletes the first key and takes it off
	// every host, with no further command.
	eventually(t, 20*time.Second, "the first key to leave every host", func() bool {
		for _, host := range h.srv.Hosts() {
			for _, fp := range fileFingerprints(host.ReadAuthorizedKeys(t)) {
				if fp == firstFP {
					return false
				}
			}
		}
		return true
	})
	if n := h.assertNoLockout("after the sweep"); n != 3 {
		t.Errorf("%d hosts hold the current key, want 3", n)
	}
	eventually(t, 10*time.Second, "status to count 3 ok hosts", func() bool {
		out, _, code := h.rotatord(nil, "status", "-config", h.cfgPath)
		return code == 0 && strings.Contains(out, "fleet: hosts 3 ok, 0 stale, 0 unreachable, 0 unverified")
	})
	out, stderr, code := h.rotatord(nil, "report", "-config", h.cfgPath, "-fail-on", "overdue,stale")
	if code != 0 || strings.Count(out, current+" (active)") != 3 || !strings.Contains(out, "hosts: 3 ok, 0 stale") {
		t.Errorf("report -fail-on stale: exit %d\n%s%s", code, out, stderr)
	}

	// A host that goes away fails the gate once a run has seen it.
	h.srv.SetDown(h.srv.Hosts()[0], true)
	if _, stderr, code := h.rotatord(nil, "rotate", "-config", h.cfgPath, "-all"); code != 0 {
		t.Fatalf("rotate: exit %d\n%s", code, stderr)
	}
	out, _, code = h.rotatord(nil, "report", "-config", h.cfgPath, "-fail-on", "stale")
	if code != 3 || !strings.Contains(out, "unreachable") {
		t.Errorf("report -fail-on stale with an unreachable host: exit %d, want 3\n%s", code, out)
	}
	d.signal(15)
	if code := d.wait(20 * time.Second); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
}
