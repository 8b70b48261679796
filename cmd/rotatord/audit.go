package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/policy"
)

const auditUsage = `Usage:
  rotatord audit export -config FILE [-since TIME] [-format jsonl|csv] [-out FILE]
  rotatord audit verify -config FILE [-file EXPORT] [-expect-head SEQ:HASH] [-partial] [-key-file FILE]
`

func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("audit needs a subcommand: export or verify\n%s", auditUsage)
	}
	switch args[0] {
	case "export":
		return cmdAuditExport(ctx, args[1:], stdout, stderr)
	case "verify":
		return cmdAuditVerify(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stderr, auditUsage)
		return nil
	}
	return usageErr("unknown audit subcommand %q\n%s", args[0], auditUsage)
}

// cmdAuditExport writes the audit log, through the daemon when one runs.
func cmdAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit export", stderr)
	config := fs.String("config", "", "config `FILE`")
	since := fs.String("since", "", "export from the first entry at or after `TIME` (RFC 3339 or YYYY-MM-DD, UTC); verify such an export with -partial")
	format := fs.String("format", audit.FormatJSONL, "`format`: jsonl or csv")
	out := fs.String("out", "", "write to `FILE` (mode 0640) instead of standard output")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	if !slices.Contains(audit.ExportFormats(), *format) {
		return usageErr("unknown -format %q (want one of %v)", *format, audit.ExportFormats())
	}
	req := control.AuditExportRequest{Format: *format}
	if *since != "" {
		t, err := parseSince(*since)
		if err != nil {
			return usageErr("-since: %v", err)
		}
		req.Since = t
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	s, err := connect(ctx, cfg, daemon.Options{Version: version, Logger: newLogger(stderr, logLevel()), ReadOnly: true, NoSlack: true, NoVault: true}, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	return writeOutput(stdout, *out, func(w io.Writer) error { return s.AuditExport(ctx, w, req) })
}

// cmdAuditVerify checks the live log (through the daemon, which holds the
// key) or an export file. Exit 0: the chain and every HMAC hold (and the
// expected head is in the log); 1: broken, naming the first bad entry.
func cmdAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", stderr)
	config := fs.String("config", "", "config `FILE`")
	file := fs.String("file", "", "verify this `EXPORT` (jsonl or csv) instead of the live log")
	expect := fs.String("expect-head", "", "a head published earlier, `SEQ:HASH` (in a report or digest): catches a cut tail")
	partial := fs.Bool("partial", false, "with -file: accept an export made with -since (its first entry's prev_hash is taken on trust)")
	keyFile := fs.String("key-file", "", "with -file: the audit key (hex or base64) from this `FILE` instead of Vault")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	if *file == "" && (*partial || *keyFile != "") {
		return usageErr("-partial and -key-file go with -file")
	}
	var head *audit.Head
	if *expect != "" {
		h, err := audit.ParseHead(*expect)
		if err != nil {
			return usageErr("-expect-head %q: %v", *expect, err)
		}
		head = &h
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	log := newLogger(stderr, logLevel())
	var res control.AuditVerifyResult
	if *file == "" {
		s, err := connect(ctx, cfg, daemon.Options{Version: version, Logger: log, ReadOnly: true, NoSlack: true}, nil)
		if err != nil {
			return err
		}
		defer s.Close()
		if res, err = s.AuditVerify(ctx, control.AuditVerifyRequest{ExpectHead: *expect}); err != nil {
			return err
		}
	} else {
		opts := audit.VerifyOptions{ExpectHead: head, Partial: *partial}
		if opts.Key, err = auditKey(ctx, *keyFile, cfg, log); err != nil {
			return err
		}
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		r, verr := audit.VerifyExport(f, opts)
		if verr != nil && !errors.Is(verr, audit.ErrBroken) {
			return fmt.Errorf("verify %s: %w", *file, verr)
		}
		res = daemon.AuditResult(r, verr)
	}
	return printVerify(stdout, res)
}

func auditKey(ctx context.Context, keyFile string, cfg *policy.Config, log *slog.Logger) (audit.Key, error) {
	if keyFile == "" {
		return daemon.LoadAuditKey(ctx, cfg, log)
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return audit.Key{}, err
	}
	k, err := audit.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return audit.Key{}, fmt.Errorf("audit key in %s: %w", keyFile, err)
	}
	return k, nil
}

func printVerify(w io.Writer, res control.AuditVerifyResult) error {
	if res.Broken != "" {
		return exitCode{code: exitFailed, msg: "audit log BROKEN: " + res.Broken}
	}
	fmt.Fprintf(w, "audit log OK: %d entries, head %s", res.Entries, res.Head)
	if res.Base != "" {
		fmt.Fprintf(w, ", starting after %s", res.Base)
	}
	if res.HMACChecked {
		fmt.Fprint(w, ", every HMAC checked")
	} else {
		fmt.Fprint(w, ", hash chain only (no key)")
	}
	if res.HeadChecked {
		fmt.Fprint(w, ", the expected head is in the log")
	}
	if res.Checkpoints > 0 {
		fmt.Fprintf(w, ", %d retention checkpoint(s)", res.Checkpoints)
	}
	if res.UpgradedThrough > 0 {
		fmt.Fprintf(w, "; entries up to %d were chained on upgrade", res.UpgradedThrough)
	}
	fmt.Fprintln(w)
	return nil
}

// parseSince reads an RFC 3339 time or a date (midnight UTC).
func parseSince(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time or a YYYY-MM-DD date", s)
}

// writeOutput runs write against standard output, or a file created with
// mode 0640 (an auditor's export or a report handed on), replacing it only
// once the write succeeded.
func writeOutput(stdout io.Writer, path string, write func(io.Writer) error) error {
	if path == "" {
		return write(stdout)
	}
	tmp, err := os.CreateTemp(dirOf(path), ".rotatord-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o640); err != nil {
		tmp.Close()
		return err
	}
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i+1]
	}
	return "."
}
