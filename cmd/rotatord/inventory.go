package main

import (
	"fmt"
	"io"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/rotate"
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
