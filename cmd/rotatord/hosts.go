package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// printHostsSummary is check's report on the policies that converge hosts:
// which hosts, how their host keys are checked, which file is edited and
// how many at once. Nothing when no policy has a hosts block.
func printHostsSummary(w io.Writer, cfg *policy.Config) {
	var any bool
	for _, p := range cfg.Policies {
		any = any || p.Hosts != nil
	}
	if !any {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tHOSTS\tHOST KEYS\tAUTHORIZED_KEYS\tCONCURRENCY\tTIMEOUT")
	for _, p := range cfg.Policies {
		h := p.Hosts
		if h == nil {
			continue
		}
		var targets []string
		for _, t := range h.Targets {
			targets = append(targets, t.String())
		}
		if h.Discover {
			targets = append(targets, "+ discovered instances")
		}
		var checks []string
		if h.KnownHosts != "" {
			checks = append(checks, "known_hosts "+h.KnownHosts)
		}
		if h.TrustOnFirstUse {
			checks = append(checks, "trust on first use")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, strings.Join(targets, " "), strings.Join(checks, ", "),
			h.AuthorizedKeys, h.Concurrency, policy.FormatDuration(h.Timeout))
	}
	tw.Flush()
}

// printHostsStatus is status's line per policy with hosts: how many are
// ok, stale, unreachable and unverified.
func printHostsStatus(w io.Writer, st control.Status) {
	for _, p := range st.Policies {
		if p.Hosts == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: hosts %d ok, %d stale, %d unreachable, %d unverified", p.Name,
			p.Hosts["ok"], p.Hosts["stale"], p.Hosts["unreachable"], p.Hosts["unverified"])
	}
}

// printHostPlans is plan's part about hosts: per host, the keys a run
// would add and remove, from what rotatord recorded at its last contact.
func printHostPlans(w io.Writer, hs []rotate.HostPlan) {
	for _, h := range hs {
		var parts []string
		if h.NewKey {
			parts = append(parts, "add the new key")
		}
		for _, fp := range h.Add {
			parts = append(parts, "add "+fp)
		}
		for _, fp := range h.Remove {
			parts = append(parts, "remove "+fp)
		}
		if len(parts) == 0 {
			parts = append(parts, "nothing to change")
		}
		detail := ""
		if h.Detail != "" {
			detail = " (" + h.Detail + ")"
		}
		fmt.Fprintf(w, "  host         %s: %s%s\n", h.Host, strings.Join(parts, ", "), detail)
	}
}
