package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/report"
	"github.com/rotatord/rotatord/internal/rotate"
)

// rotateViaSocket asks a running daemon to rotate; ok is false when no
// daemon listens (the caller then rotates in-process).
func rotateViaSocket(ctx context.Context, socket string, names []string, emergency bool) ([]rotate.Result, error, bool) {
	res, err := control.NewClient(socket).Rotate(ctx, control.RotateRequest{Policies: names, Emergency: emergency})
	if errors.Is(err, control.ErrNoDaemon) {
		return nil, nil, false
	}
	if err != nil {
		return nil, err, true
	}
	out := make([]rotate.Result, len(res))
	for i, r := range res {
		out[i] = rotate.Result{Policy: r.Policy, Rotated: r.Rotated, KeyID: r.KeyID, KeyName: r.KeyName,
			Fingerprint: r.Fingerprint, Deleted: r.Deleted, Reason: r.Reason}
		if r.Error != "" {
			out[i].Err = errors.New(r.Error)
		}
	}
	return out, nil, true
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	config := fs.String("config", "", "config `FILE`")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	st, err := control.NewClient(cfg.Control.Socket).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st, time.Now())
	return nil
}

func printStatus(w io.Writer, st control.Status, now time.Time) {
	fmt.Fprintf(w, "rotatord %s (pid %d), up %s, config %s loaded %s ago", st.Version, st.PID,
		rotate.FormatAge(now.Sub(st.StartedAt)), st.ConfigFile, rotate.FormatAge(now.Sub(st.ConfigLoadedAt)))
	if !st.LastReloadOK {
		fmt.Fprintf(w, "\nLAST RELOAD FAILED (old config still in force): %s", st.LastReloadErr)
	}
	fmt.Fprintf(w, "\nnotifications queued: %d\n\n", st.OutboxPending)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tPROVIDER\tKEY\tAGE\tMAX AGE\tNEXT RUN (UTC)\tLAST RESULT\tIN FLIGHT")
	for _, p := range st.Policies {
		key, age := "-", "-"
		if p.CurrentKeyID != "" {
			key = p.CurrentKeyName
			age = rotate.FormatAge(time.Duration(p.AgeSeconds) * time.Second)
		}
		next := "-"
		if !p.NextRun.IsZero() {
			next = p.NextRun.UTC().Format(time.RFC3339)
		}
		last := p.LastResult
		if last == "" {
			last = "-"
		}
		if p.Failing {
			last = fmt.Sprintf("FAILING (%d failures)", p.ConsecutiveFailures)
		} else if p.ConsecutiveFailures > 0 {
			last = fmt.Sprintf("failed x%d", p.ConsecutiveFailures)
		}
		inflight := ""
		if p.InFlight {
			inflight = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Provider, key, age,
			rotate.FormatAge(time.Duration(p.MaxAgeSeconds)*time.Second), next, last, inflight)
	}
	tw.Flush()
	for _, p := range st.Policies {
		if p.LastError != "" {
			fmt.Fprintf(w, "\n%s: last error: %s", p.Name, p.LastError)
		}
	}
}

func cmdReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("report", stderr)
	config := fs.String("config", "", "config `FILE`")
	format := fs.String("format", "table", "output `format`: table, json, csv or markdown")
	failOn := fs.String("fail-on", "", "exit 3 when any key is `overdue` (or failing)")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	if !slices.Contains(report.Formats(), *format) {
		return usageErr("unknown -format %q (want one of %v)", *format, report.Formats())
	}
	if *failOn != "" && *failOn != "overdue" {
		return usageErr("unknown -fail-on %q (want overdue)", *failOn)
	}
	rep, err := fetchReport(ctx, *config, stderr)
	if err != nil {
		return err
	}
	if err := rep.Write(stdout, *format); err != nil {
		return err
	}
	if *failOn == "overdue" && rep.Failing() {
		return exitCode{code: exitOverdue, msg: "report: some keys are overdue or failing"}
	}
	return nil
}

// fetchReport asks the running daemon, or builds the report in-process
// when no daemon runs.
func fetchReport(ctx context.Context, config string, stderr io.Writer) (*report.Report, error) {
	cfg, err := loadConfig(config)
	if err != nil {
		return nil, err
	}
	raw, err := control.NewClient(cfg.Control.Socket).Report(ctx)
	if err == nil {
		var rep report.Report
		if err := json.Unmarshal(raw, &rep); err != nil {
			return nil, fmt.Errorf("decode report: %w", err)
		}
		return &rep, nil
	}
	if !errors.Is(err, control.ErrNoDaemon) {
		return nil, err
	}
	if _, err := os.Stat(cfg.State.Path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no state file at %s: rotatord has not run yet", cfg.State.Path)
	}
	app, err := daemon.New(ctx, cfg, daemon.Options{Version: version, Logger: newLogger(stderr, logLevel()), ReadOnly: true, NoSlack: true, NoVault: true})
	if err != nil {
		return nil, err
	}
	defer app.Close()
	return app.BuildReport(ctx)
}
