package notify

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/policy"
)

// Slack's Block Kit limits. A message that breaks one is refused whole
// (invalid_blocks), which would turn a long error text into a lost message,
// so every text is cut to fit.
const (
	maxHeader  = 150
	maxField   = 2000
	maxSection = 3000
	maxText    = 3000
)

// headers gives each kind its emoji and wording; %s is the policy name.
var headers = map[string]string{
	policy.EventRotated:         ":key: %s rotated",
	policy.EventDeleted:         ":wastebasket: %s: old key deleted",
	policy.EventFailed:          ":x: %s rotation failed",
	policy.EventOverdue:         ":hourglass: %s key overdue",
	policy.EventFailing:         ":rotating_light: %s is failing",
	policy.EventRecovered:       ":white_check_mark: %s recovered",
	policy.EventExposed:         ":unlock: %s: a retired or expired key still opens running machines",
	policy.EventHostUpdated:     ":computer: %s: hosts updated",
	policy.EventHostUnreachable: ":electric_plug: %s: host unreachable",
	policy.EventHostKeyChanged:  ":rotating_light: %s: host key changed, host refused",
	policy.EventReloadFailed:    ":warning: %s config reload failed",
	policy.EventReport:          ":clipboard: %s key compliance report",
	policy.EventLeaderChanged:   ":crown: %s rotatord leader changed",
}

// Blocks renders ev as a Block Kit message: a header line for its kind, a
// section of fields (policy, provider, key name and IDs, old → new
// fingerprint, grace deadline, vault path), the error and detail texts, and
// the event time. text is the fallback (mrkdwn-escaped) that notifications
// and clients without Block Kit show. Free text is stripped of anything that
// looks like key material.
func Blocks(ev Event) (text string, blocks []slack.Block) {
	ev = redactEvent(ev)

	header := headerLine(ev)
	blocks = append(blocks, slack.NewHeaderBlock(
		slack.NewTextBlockObject(slack.PlainTextType, truncate(header, maxHeader), true, false)))

	var fields []*slack.TextBlockObject
	var plain []string // the same facts for the fallback text
	add := func(label, value, mrkdwn string) {
		if value == "" {
			return
		}
		fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType,
			truncate("*"+label+"*\n"+mrkdwn, maxField), false, false))
		plain = append(plain, label+": "+value)
	}

	add("Policy", ev.Policy, code(ev.Policy))
	provider := ev.Provider
	if ev.ProjectID != 0 {
		provider += " (project " + strconv.FormatInt(ev.ProjectID, 10) + ")"
	}
	add("Provider", strings.TrimSpace(provider), escape(strings.TrimSpace(provider)))
	add("Key name", ev.KeyName, code(ev.KeyName))
	add("Key ID", ev.KeyID, code(ev.KeyID))
	add("Old key ID", ev.OldKeyID, code(ev.OldKeyID))
	switch {
	case ev.OldFingerprint != "" && ev.NewFingerprint != "":
		add("Fingerprint", ev.OldFingerprint+" → "+ev.NewFingerprint,
			code(ev.OldFingerprint)+" → "+code(ev.NewFingerprint))
	case ev.NewFingerprint != "":
		add("Fingerprint", ev.NewFingerprint, code(ev.NewFingerprint))
	case ev.OldFingerprint != "":
		add("Old fingerprint", ev.OldFingerprint, code(ev.OldFingerprint))
	}
	if !ev.GraceDeadline.IsZero() {
		grace := ev.GraceDeadline.UTC().Format(time.RFC3339)
		if !ev.Time.IsZero() {
			grace += " (" + relative(ev.GraceDeadline.Sub(ev.Time)) + ")"
		}
		add("Grace deadline", grace, escape(grace))
	}
	add("Vault path", ev.VaultPath, code(ev.VaultPath))

	if len(fields) > 10 { // Slack's limit per section
		fields = fields[:10]
	}
	if len(fields) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
	}
	if ev.Error != "" {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType,
			"*Error*\n```"+truncate(strings.ReplaceAll(escape(ev.Error), "```", "'''"), maxSection-20)+"```",
			false, false), nil, nil))
		plain = append(plain, "Error: "+ev.Error)
	}
	if ev.Detail != "" {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType,
			truncate(escape(ev.Detail), maxSection), false, false), nil, nil))
		plain = append(plain, ev.Detail)
	}
	if !ev.Time.IsZero() {
		blocks = append(blocks, slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType,
			"rotatord · "+ev.Time.UTC().Format(time.RFC3339), false, false)))
	}

	text = header
	if len(plain) > 0 {
		text += "\n" + strings.Join(plain, "\n")
	}
	return truncate(escape(text), maxText), blocks
}

func headerLine(ev Event) string {
	format, ok := headers[ev.Kind]
	if !ok {
		format = ":information_source: %s " + ev.Kind
	}
	return strings.Join(strings.Fields(fmt.Sprintf(format, ev.Policy)), " ")
}

// redactEvent runs redactKeyMaterial over every string of ev: the free text
// fields are where an error message could quote a key, but a mistake could
// put one anywhere.
func redactEvent(ev Event) Event {
	for _, p := range []*string{&ev.Kind, &ev.Policy, &ev.Provider, &ev.Channel, &ev.KeyName, &ev.KeyID,
		&ev.OldKeyID, &ev.OldFingerprint, &ev.NewFingerprint, &ev.VaultPath, &ev.Error, &ev.Detail} {
		*p = redactKeyMaterial(*p)
	}
	return ev
}

var (
	// pemBlock matches a PEM block of any type, also when its END line was
	// cut off (a truncated error message) or its newlines were escaped.
	pemBlock = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*-----(?s:.*?)(?:-----END [A-Z0-9 ]*-----|\z)`)
	// opensshBody matches the base64 body of an OpenSSH private key
	// ("openssh-key-v1" encoded) when it shows up without its armour.
	opensshBody = regexp.MustCompile(`b3BlbnNzaC1rZXktdjE[A-Za-z0-9+/=\s\\n]*`)
)

// redactKeyMaterial replaces anything that looks like a PEM block or an
// OpenSSH private key body with [REDACTED]. Events should never carry key
// material; this is defence in depth for error texts that quote a response
// or a file.
func redactKeyMaterial(s string) string {
	if !strings.Contains(s, "-----BEGIN ") && !strings.Contains(s, "b3BlbnNzaC1rZXktdjE") {
		return s
	}
	s = pemBlock.ReplaceAllLiteralString(s, secret.Redacted)
	return opensshBody.ReplaceAllLiteralString(s, secret.Redacted)
}

// escape makes s safe in mrkdwn: Slack reads <...> as links and mentions
// (<!channel>), so a provider's error text must not be able to page a whole
// channel.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// code renders s as inline code; a backquote inside would end the span.
func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + strings.ReplaceAll(escape(s), "`", "'") + "`"
}

// truncate cuts s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// relative renders d as "in 7d", "in 6d 23h", "2h 5m ago" or "now".
func relative(d time.Duration) string {
	ago := d < 0
	if ago {
		d = -d
	}
	d = d.Round(time.Minute)
	days, hours, mins := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour), int(d%time.Hour/time.Minute)
	var parts []string
	switch {
	case days > 0:
		parts = append(parts, strconv.Itoa(days)+"d")
		if hours > 0 {
			parts = append(parts, strconv.Itoa(hours)+"h")
		}
	case hours > 0:
		parts = append(parts, strconv.Itoa(hours)+"h")
		if mins > 0 {
			parts = append(parts, strconv.Itoa(mins)+"m")
		}
	case mins > 0:
		parts = append(parts, strconv.Itoa(mins)+"m")
	default:
		return "now"
	}
	if ago {
		return strings.Join(parts, " ") + " ago"
	}
	return "in " + strings.Join(parts, " ")
}
