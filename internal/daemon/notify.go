package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rotatord/rotatord/internal/notify"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// channel is one notification destination: Slack or a webhook. Each has
// an outbox of its own (entries of its sink) drained by its own
// dispatcher, so one failing receiver never holds up another.
type channel struct {
	sink rotate.Sink
	disp *notify.Dispatcher
	// daemon says which of the daemon's own events (reload_failed, the
	// report digest) the channel takes.
	daemon func(kind string) bool
}

// openSlack adds the Slack channel.
func (a *App) openSlack(cfg *policy.Config) error {
	sc := notify.Config{DefaultChannel: cfg.Slack.Channel, Logger: a.log.With("component", "slack")}
	var err error
	if cfg.Slack.TokenEnv != "" || cfg.Slack.TokenFile != "" {
		sc.Token, err = resolveSecret("slack token", cfg.Slack.TokenEnv, cfg.Slack.TokenFile)
	} else {
		sc.WebhookURL, err = resolveSecret("slack webhook url", cfg.Slack.WebhookURLEnv, cfg.Slack.WebhookURLFile)
	}
	if err != nil {
		return err
	}
	slack, err := notify.New(sc)
	if err != nil {
		return fmt.Errorf("slack: %w", err)
	}
	a.channels = append(a.channels, channel{
		sink: rotate.NotifySink(state.SinkSlack),
		disp: notify.NewDispatcher(outbox{a.db, state.SinkSlack}, slack, notify.DispatcherOptions{Logger: a.log.With("component", "notify", "sink", state.SinkSlack)}),
		daemon: func(kind string) bool {
			return kind == policy.EventReloadFailed || kind == policy.EventReport || kind == policy.EventLeaderChanged
		},
	})
	return nil
}

// openWebhooks adds a channel per configured webhook. Their URLs and
// secrets are read once, like Slack's: changing them takes a restart.
func (a *App) openWebhooks(cfg *policy.Config) error {
	host, _ := os.Hostname()
	for _, w := range cfg.Webhooks {
		what := fmt.Sprintf("webhook %q", w.Name)
		url, err := resolveSecret(what+" url", w.URLEnv, w.URLFile)
		if err != nil {
			return err
		}
		key, err := resolveSecret(what+" secret", w.SecretEnv, w.SecretFile)
		if err != nil {
			return err
		}
		log := a.log.With("component", "notify", "sink", w.Name)
		wh, err := notify.NewWebhook(notify.WebhookConfig{
			Name: w.Name, URL: url, Secret: key, Events: w.Events, Insecure: w.Insecure,
			Source: "rotatord/" + host, UserAgent: "rotatord/" + a.opts.Version, Logger: log,
		})
		if err != nil {
			return err
		}
		a.channels = append(a.channels, channel{
			sink: rotate.Sink{Name: w.Name, Wants: func(_ policy.Policy, kind string) bool { return wh.Wants(kind) }},
			disp: notify.NewDispatcher(outbox{a.db, w.Name}, wh, notify.DispatcherOptions{Logger: log}),
			daemon: func(kind string) bool {
				return kind != policy.EventReport && wh.Wants(kind)
			},
		})
	}
	return nil
}

// sinks are the destinations the engine queues for; none means the outbox
// is not written at all (it would only grow).
func (a *App) sinks() []rotate.Sink {
	out := make([]rotate.Sink, 0, len(a.channels))
	for _, c := range a.channels {
		out = append(out, c.sink)
	}
	return out
}

// kick wakes the dispatchers after events were queued.
func (a *App) kick() {
	for _, c := range a.channels {
		c.disp.Kick()
	}
}

// notifyDaemon queues one of the daemon's own events for the channels
// that take it, and reports whether any did.
func (a *App) notifyDaemon(ev state.Event) (bool, error) {
	var sinks []string
	for _, c := range a.channels {
		if c.daemon(ev.Kind) {
			sinks = append(sinks, c.sink.Name)
		}
	}
	if len(sinks) == 0 {
		return false, nil
	}
	if err := a.db.Update(func(tx state.Tx) error { _, err := tx.Enqueue(ev, sinks...); return err }); err != nil {
		return false, fmt.Errorf("queue %s event: %w", ev.Kind, err)
	}
	a.kick()
	return true, nil
}

// runDispatchers drains every outbox until ctx ends.
func (a *App) runDispatchers(ctx context.Context) {
	for _, c := range a.channels {
		a.bg.Go(func() { c.disp.Run(ctx) })
	}
}

// FlushNotifications gives every channel one chance to take its queued
// events before a one-shot command exits; what one does not take stays
// queued for the next run.
func (a *App) FlushNotifications(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for _, c := range a.channels {
		if _, err := c.disp.DrainOnce(fctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.sink.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		a.log.Warn("notifications left queued for the next run", "err", err)
	}
}
