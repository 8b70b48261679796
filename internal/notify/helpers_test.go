package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
	"golang.org/x/time/rate"
)

// testToken looks like a bot token so that slack-go treats it as one.
const testToken = "xoxb-1234-5678-SeCrEtBoTtOkEn"

// t0 is the fixed "now" of every test.
var t0 = time.Date(2025, 3, 1, 3, 0, 0, 0, time.UTC)

// reply is one scripted answer of the fake Slack.
type reply struct {
	status int
	header map[string]string
	body   string
}

var (
	replyRateLimited = reply{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}}
	replyUnavailable = reply{status: http.StatusInternalServerError, body: "<html>oops</html>"}
)

func replyAPIError(code string) reply {
	return reply{status: http.StatusOK, body: `{"ok":false,"error":"` + code + `"}`}
}

// post is one message the fake Slack accepted.
type post struct {
	Channel string
	Text    string
	Blocks  string // raw JSON
	Form    url.Values
}

// fakeSlack is slacktest's server with chat.postMessage replaced by a
// recorder that can be scripted to fail: slacktest's own handler records
// nothing we can read back and cannot answer 429 or 500.
type fakeSlack struct {
	*slacktest.Server

	mu       sync.Mutex
	script   []reply  // answered, in order, before messages are accepted again
	requests []string // every request body, accepted or not
	posts    []post
}

func newFakeSlack(t *testing.T) *fakeSlack {
	t.Helper()
	f := &fakeSlack{}
	f.Server = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", f.postMessage)
	})
	f.Start()
	t.Cleanup(f.Stop)
	return f
}

func (f *fakeSlack) postMessage(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))

	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, string(body))
	if len(f.script) > 0 {
		rep := f.script[0]
		f.script = f.script[1:]
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, rep.body)
		return
	}
	f.posts = append(f.posts, post{Channel: form.Get("channel"), Text: form.Get("text"), Blocks: form.Get("blocks"), Form: form})
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": form.Get("channel"), "ts": "1700000000.000100"})
}

// answer queues replies for the next requests.
func (f *fakeSlack) answer(rs ...reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, rs...)
}

func (f *fakeSlack) Posts() []post {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.posts)
}

func (f *fakeSlack) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// newBot returns a bot-token notifier talking to f, with no client-side
// pacing so tests do not wait.
func newBot(t *testing.T, f *fakeSlack, logger *slog.Logger) *Slack {
	t.Helper()
	s, err := New(Config{
		Token:          testToken,
		DefaultChannel: "#ops-keys",
		APIURL:         f.GetAPIURL(),
		Logger:         logger,
		Timeout:        5 * time.Second,
		ChannelRate:    rate.Inf,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// blockText decodes a blocks JSON payload and returns all its texts, one per
// line, in order; it fails the test if the payload is not valid Block Kit
// or does not open with a header.
func blockText(t *testing.T, raw string) string {
	t.Helper()
	var bs slack.Blocks
	if err := json.Unmarshal([]byte(raw), &bs); err != nil {
		t.Fatalf("decode blocks %s: %v", raw, err)
	}
	if len(bs.BlockSet) == 0 || bs.BlockSet[0].BlockType() != slack.MBTHeader {
		t.Fatalf("blocks do not open with a header: %s", raw)
	}
	var lines []string
	for _, b := range bs.BlockSet {
		switch b := b.(type) {
		case *slack.HeaderBlock:
			lines = append(lines, b.Text.Text)
		case *slack.SectionBlock:
			if b.Text != nil {
				lines = append(lines, b.Text.Text)
			}
			for _, f := range b.Fields {
				lines = append(lines, f.Text)
			}
		case *slack.ContextBlock:
			for _, e := range b.ContextElements.Elements {
				if tb, ok := e.(*slack.TextBlockObject); ok {
					lines = append(lines, tb.Text)
				}
			}
		}
	}
	return strings.Join(lines, "\n")
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// memOutbox is an in-memory Outbox with the semantics the bbolt one must
// have: IDs in enqueue order, Pending oldest first and only when due.
type memOutbox struct {
	mu     sync.Mutex
	nextID uint64
	items  []*memItem
}

type memItem struct {
	OutboxItem
	next    time.Time
	lastErr string
}

func (o *memOutbox) Enqueue(ev Event) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.nextID++
	o.items = append(o.items, &memItem{OutboxItem: OutboxItem{ID: o.nextID, Event: ev}})
	return o.nextID
}

func (o *memOutbox) Pending(_ context.Context, now time.Time, limit int) ([]OutboxItem, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var due []OutboxItem
	for _, it := range o.items {
		if len(due) < limit && !it.next.After(now) {
			due = append(due, it.OutboxItem)
		}
	}
	return due, nil
}

func (o *memOutbox) Ack(_ context.Context, id uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.items = slices.DeleteFunc(o.items, func(it *memItem) bool { return it.ID == id })
	return nil
}

func (o *memOutbox) Retry(_ context.Context, id uint64, next time.Time, errMsg string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, it := range o.items {
		if it.ID == id {
			it.Attempts++
			it.next = next
			it.lastErr = errMsg
		}
	}
	return nil
}

// Item returns a copy of the queued item id, or false once it is gone.
func (o *memOutbox) Item(id uint64) (memItem, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, it := range o.items {
		if it.ID == id {
			return *it, true
		}
	}
	return memItem{}, false
}

func (o *memOutbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items)
}

// logBuffer collects JSON log lines from concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
