package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// maxLeftBehind bounds the machines plan names per policy; the report
// lists them all.
const maxLeftBehind = 20

// printLeftBehind lists the machines a plan leaves on a key it retires.
func printLeftBehind(w io.Writer, ms []rotate.Machine) {
	if len(ms) == 0 {
		return
	}
	fmt.Fprintf(w, "  %d running machine(s) keep a key this plan leaves behind (they still accept it):\n", len(ms))
	for i, m := range ms {
		if i == maxLeftBehind {
			fmt.Fprintf(w, "    ...and %d more: rotatord report lists them all\n", len(ms)-maxLeftBehind)
			break
		}
		name := m.Name
		if name == "" {
			name = m.InstanceID
		}
		addr := ""
		if m.Address != "" {
			addr = " (" + m.Address + ")"
		}
		fmt.Fprintf(w, "    %s%s on %s [%s]: %s\n", name, addr, m.KeyName, m.KeyStatus, m.Why)
	}
}

// printOldKeyMachines names the policies with machines on a non-current
// key, after the status table.
func printOldKeyMachines(w io.Writer, ps []control.PolicyStatus) {
	shown := false
	for _, p := range ps {
		if p.InstancesOnOldKeys > 0 {
			fmt.Fprintf(w, "\n%s: %d running machine(s) on a non-current key (rotatord report lists them)", p.Name, p.InstancesOnOldKeys)
			shown = true
		}
	}
	if shown {
		fmt.Fprintln(w)
	}
}

// printInventorySummary is check's line on the instance inventory: which
// provider accounts each run lists, and the Gcore regions when limited.
func printInventorySummary(w io.Writer, cfg *policy.Config) {
	var parts []string
	for _, p := range cfg.Providers {
		switch {
		case p.NoInventory:
			parts = append(parts, p.Name+" off")
		case len(p.Regions) > 0:
			ids := make([]string, len(p.Regions))
			for i, r := range p.Regions {
				ids[i] = strconv.FormatInt(r, 10)
			}
			parts = append(parts, fmt.Sprintf("%s on (regions %s)", p.Name, strings.Join(ids, ", ")))
		default:
			parts = append(parts, p.Name+" on")
		}
	}
	fmt.Fprintf(w, "\ninventory (which machines each key reached, listed after each run): %s\n", strings.Join(parts, "; "))
}
