package daemon

import (
	"context"
	"time"

	"github.com/rotatord/rotatord/internal/notify"
	"github.com/rotatord/rotatord/internal/state"
)

// outbox adapts one sink of the state's notification outbox to
// notify.Outbox.
type outbox struct {
	db   state.Store
	sink string
}

func (o outbox) Pending(_ context.Context, now time.Time, limit int) ([]notify.OutboxItem, error) {
	var items []notify.OutboxItem
	err := o.db.View(func(tx state.Tx) error {
		es, err := tx.PendingOutbox(o.sink, now, limit)
		for _, e := range es {
			items = append(items, notify.OutboxItem{ID: e.ID, Event: notify.Event(e.Event), Attempts: e.Attempts})
		}
		return err
	})
	return items, err
}

func (o outbox) Ack(_ context.Context, id uint64) error {
	return o.db.Update(func(tx state.Tx) error { return tx.AckOutbox(id) })
}

func (o outbox) Retry(_ context.Context, id uint64, next time.Time, errMsg string) error {
	return o.db.Update(func(tx state.Tx) error { return tx.RetryOutbox(id, next, errMsg) })
}
