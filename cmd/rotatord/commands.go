package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// stringList is a repeatable flag (-policy a -policy b).
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	config := fs.String("config", "", "config `FILE`")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	printSummary(stdout, cfg, time.Now())
	printHostsSummary(stdout, cfg)
	printInventorySummary(stdout, cfg)
	return nil
}

// printSummary is check's report on a valid config: policies per provider,
// when each runs next and how late (jitter), and its maintenance window.
// Specs are read in UTC, as the daemon's scheduler reads them.
func printSummary(w io.Writer, cfg *policy.Config, now time.Time) {
	fmt.Fprintf(w, "%s: OK: %d provider(s), %d polic(ies)\n", cfg.File, len(cfg.Providers), len(cfg.Policies))
	byProv := map[string][]policy.Policy{}
	for _, p := range cfg.Policies {
		byProv[p.Provider] = append(byProv[p.Provider], p)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tPOLICY\tSCHEDULE\tJITTER\tNEXT RUN (UTC)\tMAX AGE\tWINDOW\tVAULT PATH")
	for _, prov := range cfg.Providers {
		for _, p := range byProv[prov.Name] {
			next := "-"
			if s, err := policy.ParseSchedule(p.Schedule); err == nil {
				next = s.Next(now.UTC()).UTC().Format(time.RFC3339)
			}
			jitter, window := "-", "-"
			if p.Jitter > 0 {
				jitter = policy.FormatDuration(p.Jitter)
			}
			if p.Window != nil {
				window = fmt.Sprintf("%s for %s", p.Window.Schedule, policy.FormatDuration(p.Window.Duration))
			}
			fmt.Fprintf(tw, "%s (%s)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", prov.Name, prov.Type, p.Name, p.Schedule, jitter, next,
				rotate.FormatAge(p.MaxAge), window, p.VaultPath)
		}
	}
	tw.Flush()
}

// loadConfig reads and validates the config; an invalid one exits 1 with
// every error, file:line first.
func loadConfig(path string) (*policy.Config, error) {
	cfg, err := policy.Load(path)
	if err != nil {
		return nil, exitCode{code: exitFailed, msg: err.Error()}
	}
	return cfg, nil
}

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("plan", stderr)
	config := fs.String("config", "", "config `FILE`")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	opts := daemon.Options{Version: version, Logger: newLogger(stderr, logLevel()), ReadOnly: true, NoSlack: true, NoVault: true}
	s, err := connect(ctx, cfg, opts, func(cfg *policy.Config, opts *daemon.Options) (func(), error) {
		if _, err := os.Stat(cfg.State.Path); cfg.State.Backend == policy.BackendEtcd || !errors.Is(err, os.ErrNotExist) {
			return func() {}, nil
		}
		// A fresh install: plan against an empty state in a scratch file
		// so that a dry run does not create the real one.
		tmp, err := os.MkdirTemp("", "rotatord-plan-")
		if err != nil {
			return nil, err
		}
		cfg.State.Path, opts.ReadOnly = filepath.Join(tmp, "state.db"), false
		return func() { _ = os.RemoveAll(tmp) }, nil
	})
	if err != nil {
		return err
	}
	defer s.Close()
	raw, err := s.Plan(ctx)
	if err != nil {
		return err
	}
	var reply daemon.PlanReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		return fmt.Errorf("decode plan: %w", err)
	}
	printPlan(stdout, reply.Plans, time.Now())
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	return nil
}

func printPlan(w io.Writer, plans []rotate.PolicyPlan, now time.Time) {
	for _, pp := range plans {
		fmt.Fprintf(w, "policy %s (%s): %s\n", pp.Policy, pp.Provider, pp.Reason)
		if pp.Jitter > 0 {
			fmt.Fprintf(w, "  scheduled runs start up to %s late (jitter)\n", policy.FormatDuration(pp.Jitter))
		}
		switch {
		case pp.NextWindow.IsZero():
		case !now.Before(pp.NextWindow):
			fmt.Fprintf(w, "  maintenance window open until %s\n", pp.WindowCloses.UTC().Format(time.RFC3339))
		default:
			fmt.Fprintf(w, "  next maintenance window %s to %s\n", pp.NextWindow.UTC().Format(time.RFC3339), pp.WindowCloses.UTC().Format(time.RFC3339))
		}
		if len(pp.Actions) == 0 {
			fmt.Fprintln(w, "  nothing to do")
		}
		for _, a := range pp.Actions {
			key := a.KeyName
			if a.KeyID != "" {
				key += " [" + a.KeyID + "]"
			}
			when := ""
			if !a.At.IsZero() && a.At.After(now.Add(time.Second)) {
				when = " at " + a.At.UTC().Format(time.RFC3339)
			}
			detail := ""
			if a.Detail != "" {
				detail = ": " + a.Detail
			}
			fmt.Fprintf(w, "  %-12s %s%s%s\n", a.Kind, key, when, detail)
		}
		printLeftBehind(w, pp.LeftBehind)
		printHostPlans(w, pp.Hosts)
	}
}

func cmdRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rotate", stderr)
	config := fs.String("config", "", "config `FILE`")
	var names stringList
	fs.Var(&names, "policy", "policy `NAME` to rotate (repeatable)")
	all := fs.Bool("all", false, "rotate every policy")
	emergency := fs.Bool("emergency", false, "delete the replaced key as soon as the new one is active and stored (compromised key)")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	if len(names) == 0 && !*all {
		return usageErr("give -policy NAME (repeatable) or -all")
	}
	if len(names) > 0 && *all {
		return usageErr("-policy and -all exclude each other")
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	log := newLogger(stderr, logLevel())
	opts := daemon.Options{Version: version, Logger: log, Hook: crashHook(log), BackoffBase: envDuration("ROTATORD_BACKOFF_BASE")}
	s, err := connect(ctx, cfg, opts, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	results, err := s.Rotate(ctx, control.RotateRequest{Policies: names, Emergency: *emergency, Trigger: rotate.TriggerCLI})
	if err != nil {
		return err
	}
	if s.app != nil {
		s.app.FlushNotifications(ctx)
	}
	return printResults(stdout, results)
}

// printResults prints one line per policy and fails if any policy failed.
func printResults(w io.Writer, results []control.RotateResult) error {
	sort.SliceStable(results, func(i, j int) bool { return results[i].Policy < results[j].Policy })
	failed := 0
	for _, r := range results {
		switch {
		case r.Error != "":
			failed++
			fmt.Fprintf(w, "%s: FAILED: %s\n", r.Policy, r.Error)
		case r.Rotated:
			fmt.Fprintf(w, "%s: rotated: %s [%s] %s", r.Policy, r.KeyName, r.KeyID, r.Fingerprint)
			if len(r.Deleted) > 0 {
				fmt.Fprintf(w, "; deleted %s", strings.Join(r.Deleted, ", "))
			}
			fmt.Fprintln(w)
		default:
			fmt.Fprintf(w, "%s: %s", r.Policy, r.Reason)
			if len(r.Deleted) > 0 {
				fmt.Fprintf(w, "; deleted %s", strings.Join(r.Deleted, ", "))
			}
			fmt.Fprintln(w)
		}
	}
	if failed > 0 {
		return exitCode{code: exitFailed, msg: fmt.Sprintf("%d of %d policies failed", failed, len(results))}
	}
	return nil
}
