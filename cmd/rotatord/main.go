// Command rotatord keeps the SSH keys of GPU-cloud accounts fresh: it
// rotates them on a schedule, keeps the private halves in Vault, and
// reports their ages to auditors. See README.md and DESIGN.md.
//
// main only turns the OS into values: flags into a config, signals into
// calls on the daemon, and results into exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // the command ran and something failed (invalid config, failed rotation)
	exitUsage   = 2 // bad flags or arguments
	exitOverdue = 3 // report -fail-on found one of its conditions (overdue: an overdue or failing key)
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error the user fixes by changing the command line.
var errUsage = errors.New("usage")

const usage = `rotatord keeps GPU-cloud SSH keys fresh and provably so.

Usage:
  rotatord run     -config FILE [-once]       run the daemon; -once: evaluate every policy once and exit
  rotatord check   -config FILE               validate the config; exit 1 if invalid
  rotatord plan    -config FILE               dry run: what would be created, defaulted, deleted now
  rotatord rotate  -config FILE (-policy NAME... | -all) [-emergency]
  rotatord report  -config FILE [-format table|json|csv|markdown|html] [-out FILE] [-fail-on overdue,exposed,stale]
  rotatord status  -config FILE               the running daemon's view
  rotatord reload  -config FILE               make the running daemon re-read its config (like SIGHUP, with the outcome)
  rotatord audit   export -config FILE [-since TIME] [-format jsonl|csv] [-out FILE]
  rotatord audit   verify -config FILE [-file EXPORT] [-expect-head SEQ:HASH] [-partial] [-key-file FILE]
  rotatord version

Run 'rotatord COMMAND -h' for a command's flags.
`

type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

var commands = map[string]command{
	"run":     cmdRun,
	"check":   cmdCheck,
	"plan":    cmdPlan,
	"rotate":  cmdRotate,
	"report":  cmdReport,
	"status":  cmdStatus,
	"reload":  cmdReload,
	"audit":   cmdAudit,
	"version": cmdVersion,
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "rotatord: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	stopProfile := startCPUProfile(stderr)
	err := cmd(context.Background(), args[1:], stdout, stderr)
	stopProfile()
	var ec exitCode
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "rotatord %s: %v\nRun 'rotatord %s -h' for usage.\n", args[0], strings.TrimPrefix(err.Error(), "usage: "), args[0])
		return exitUsage
	case errors.As(err, &ec):
		if ec.msg != "" {
			fmt.Fprintln(stderr, ec.msg)
		}
		return ec.code
	default:
		fmt.Fprintf(stderr, "rotatord %s: %v\n", args[0], err)
		return exitFailed
	}
}

// exitCode is an error that carries the process exit code.
type exitCode struct {
	code int
	msg  string
}

func (e exitCode) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

// newFlags returns a flag set whose errors are usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rotatord "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and insists on -config.
func parseFlags(fs *flag.FlagSet, args []string, config *string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	if config != nil && *config == "" {
		return usageErr("-config FILE is required")
	}
	return nil
}

// newLogger logs JSON when stderr is not a terminal (journald, files) and
// text for a person at a terminal.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("ROTATORD_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := parseFlags(fs, args, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rotatord %s\n", version)
	return nil
}
