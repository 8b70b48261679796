package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/rotate"
)

// stopTimeout bounds a graceful stop: the steps in flight get this long to
// finish before their context is cancelled (the journal stays consistent
// either way). Keep it under the unit's TimeoutStopSec.
const stopTimeout = 60 * time.Second

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	config := fs.String("config", "", "config `FILE`")
	once := fs.Bool("once", false, "evaluate every policy once, then exit")
	if err := parseFlags(fs, args, config); err != nil {
		return err
	}
	log := newLogger(stderr, logLevel())
	opts := daemon.Options{Version: version, Logger: log, Hook: crashHook(log), BackoffBase: envDuration("ROTATORD_BACKOFF_BASE")}
	if d := envDuration("ROTATORD_SWEEP_INTERVAL"); d > 0 {
		opts.SweepInterval = d
	}
	if *once {
		cfg, err := loadConfig(*config)
		if err != nil {
			return err
		}
		app, err := daemon.New(ctx, cfg, opts)
		if err != nil {
			return err
		}
		defer app.Close()
		return printResults(stdout, daemon.Results(app.RunOnce(ctx)))
	}
	opts.Notify = func(state string) { _, _ = sddaemon.SdNotify(false, state) }
	return serve(ctx, *config, opts, log)
}

// serve runs the daemon until SIGTERM/SIGINT. The first stop signal stops
// gracefully (the steps in flight finish); a second one aborts.
func serve(ctx context.Context, path string, opts daemon.Options, log *slog.Logger) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	app, err := daemon.New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	// Work runs under its own context: a stop signal lets it finish; only
	// the stop deadline or a second signal cancels it.
	work, abort := context.WithCancel(context.Background())
	defer abort()
	if err := app.Start(work); err != nil {
		app.Close()
		return err
	}
	stopWatchdog := watchdog(log)
	defer stopWatchdog()

	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			log.Info("SIGHUP: reloading", "config", path)
			_, _ = app.Reload(work) // it logs the outcome either way
		case syscall.SIGUSR1:
			log.Info("SIGUSR1: rotating every policy now")
			go func() {
				results, err := app.RotatePolicies(work, nil, false, rotate.TriggerSignal)
				if err != nil { // a standby names the leader
					log.Error("SIGUSR1: no rotation", "err", err)
				}
				for _, r := range results {
					if r.Err != nil {
						log.Error("signal rotation failed", "policy", r.Policy, "err", r.Err)
					}
				}
			}()
		case syscall.SIGTERM, syscall.SIGINT:
			log.Info("stopping: finishing the steps in flight", "signal", sig.String())
			return stop(app, sigs, abort, log)
		}
	}
	return nil
}

func stop(app *daemon.App, sigs <-chan os.Signal, abort context.CancelFunc, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				log.Warn("second stop signal: aborting the steps in flight", "signal", sig.String())
				abort()
				cancel()
				return
			}
		}
	}()
	if err := app.Stop(ctx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	log.Info("stopped")
	return nil
}

// watchdog pings systemd at half the unit's WatchdogSec, when it has one.
func watchdog(log *slog.Logger) (stop func()) {
	interval, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return func() {}
	}
	t := time.NewTicker(interval / 2)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.C:
				_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
			case <-done:
				return
			}
		}
	}()
	log.Debug("systemd watchdog enabled", "interval", interval)
	return func() { t.Stop(); close(done) }
}

func envDuration(name string) time.Duration {
	d, err := time.ParseDuration(os.Getenv(name))
	if err != nil {
		return 0
	}
	return d
}
