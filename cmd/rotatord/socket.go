package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/report"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// session is who serves a command: the running daemon over its control
// socket (it holds the state's lock), or, when none runs, an App in this
// process. Both offer control.Backend, so each command is written once.
type session struct {
	control.Backend
	app     *daemon.App // nil when a daemon serves
	cleanup func()
}

// inProcess prepares a command's own App when no daemon runs: it may
// change cfg and opts first, and returns what to clean up after.
type inProcess func(cfg *policy.Config, opts *daemon.Options) (cleanup func(), err error)

// connect picks the backend once: the daemon when one listens on the
// socket, else an App in this process opened with opts (after prepare).
func connect(ctx context.Context, cfg *policy.Config, opts daemon.Options, prepare inProcess) (*session, error) {
	client, err := control.Dial(ctx, cfg.Control.Socket)
	if err == nil {
		return &session{Backend: client}, nil
	}
	if !errors.Is(err, control.ErrNoDaemon) {
		return nil, err
	}
	s := &session{cleanup: func() {}}
	if prepare != nil {
		if s.cleanup, err = prepare(cfg, &opts); err != nil {
			return nil, err
		}
	}
	if s.app, err = daemon.New(ctx, cfg, opts); err != nil {
		s.cleanup()
		return nil, err
	}
	s.Backend = s.app
	return s, nil
}

// Close releases an in-process App; a daemon's session holds nothing.
func (s *session) Close() {
	if s.app != nil {
		_ = s.app.Close()
		s.cleanup()
	}
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
	client, err := control.Dial(ctx, cfg.Control.Socket)
	if err != nil {
		return err
	}
	st, err := client.Status(ctx)
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
	if st.Role != "" {
		fmt.Fprintf(w, "\nrole: %s; leader: %s", st.Role, st.Leader)
	}
	if st.Vault != nil && !st.Vault.Up {
		fmt.Fprintf(w, "\nVAULT DOWN (rotations fail until it answers): %s", st.Vault.Error)
	}
	fmt.Fprintf(w, "\nnotifications queued: %d\n\n", st.OutboxPending)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tPROVIDER\tKEY\tAGE\tMAX AGE\tNEXT RUN (UTC)\tNEXT WINDOW (UTC)\tLAST RESULT\tIN FLIGHT")
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
		window := "-"
		switch {
		case p.NextWindow.IsZero():
		case !p.NextWindow.After(now):
			window = "open until " + p.WindowCloses.UTC().Format(time.RFC3339)
		default:
			window = p.NextWindow.UTC().Format(time.RFC3339)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Provider, key, age,
			rotate.FormatAge(time.Duration(p.MaxAgeSeconds)*time.Second), next, window, last, inflight)
	}
	tw.Flush()
	printHostsStatus(w, st)
	for _, p := range st.Policies {
		if p.LastError != "" {
			fmt.Fprintf(w, "\n%s: last error: %s", p.Name, p.LastError)
		}
	}
	printOldKeyMachines(w, st.Policies)
}

func cmdReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("report", stderr)
	config := fs.String("config", "", "config `FILE`")
	format := fs.String("format", "table", "output `format`: table, json, csv, markdown or html")
	out := fs.String("out", "", "write to `FILE` (mode 0640) instead of standard output")
	failOn := fs.String("fail-on", "", "exit 3 when any of these `conditions` holds: a comma list of "+strings.Join(report.GateNames(), ", "))
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	if !slices.Contains(report.Formats(), *format) {
		return usageErr("unknown -format %q (want one of %v)", *format, report.Formats())
	}
	gates, err := report.ParseGates(*failOn)
	if err != nil {
		return usageErr("%v", err)
	}
	rep, err := fetchReport(ctx, *config, stderr)
	if err != nil {
		return err
	}
	if err := writeOutput(stdout, *out, func(w io.Writer) error { return rep.Write(w, *format) }); err != nil {
		return err
	}
	if tripped := rep.Tripped(gates); len(tripped) > 0 {
		return exitCode{code: exitOverdue, msg: "report: -fail-on " + strings.Join(tripped, ",") + " holds"}
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
	opts := daemon.Options{Version: version, Logger: newLogger(stderr, logLevel()), ReadOnly: true, NoSlack: true, NoVault: true}
	s, err := connect(ctx, cfg, opts, func(cfg *policy.Config, _ *daemon.Options) (func(), error) {
		if cfg.State.Backend == policy.BackendEtcd {
			return func() {}, nil
		}
		if _, err := os.Stat(cfg.State.Path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no state file at %s: rotatord has not run yet", cfg.State.Path)
		}
		return func() {}, nil
	})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	raw, err := s.Report(ctx)
	if err != nil {
		return nil, err
	}
	var rep report.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("decode report: %w", err)
	}
	return &rep, nil
}

func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", stderr)
	config := fs.String("config", "", "config `FILE`")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	client, err := control.Dial(ctx, cfg.Control.Socket)
	if err != nil {
		return err
	}
	res, err := client.Reload(ctx)
	if err != nil {
		return exitCode{code: exitFailed, msg: "reload failed; the running config stays in force:\n" + err.Error()}
	}
	fmt.Fprintf(stdout, "reloaded: %d polic(ies)\n", res.Policies)
	if res.Role == control.RoleStandby {
		fmt.Fprintf(stdout, "this rotatord is a standby: its config applies when it leads; the leader is %s: reload it too\n", res.Leader)
	}
	if len(res.RestartRequired) > 0 {
		fmt.Fprintf(stdout, "changed settings that take effect only after a restart: %s\n", strings.Join(res.RestartRequired, ", "))
	}
	return nil
}
