package notify

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rotatord/rotatord/policy"
)

const plantedPEM = "-----BEGIN OPENSSH PRIVATE KEY-----\n" +
	"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n" +
	"QyNTUxOQAAACBQbGFudGVkS2V5TWF0ZXJpYWxOb3RSZWFsQnV0TG9va3NTbw==\n" +
	"-----END OPENSSH PRIVATE KEY-----"

func TestRedactKeyMaterial(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no key material", "create key: 403 API key invalid", "create key: 403 API key invalid"},
		{"openssh block", "body: " + plantedPEM + " end", "body: [REDACTED] end"},
		{"rsa block", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "[REDACTED]"},
		{"pkcs8 block", "x -----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY----- y", "x [REDACTED] y"},
		{"two blocks keep the text between", plantedPEM + " and " + plantedPEM, "[REDACTED] and [REDACTED]"},
		{"escaped newlines", `{"private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n"}`, `{"private_key":"[REDACTED]\n"}`},
		{"cut off before END", "decode: " + plantedPEM[:90], "decode: [REDACTED]"},
		{"openssh body without armour", "got b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE", "got [REDACTED]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactKeyMaterial(tt.in); got != tt.want {
				t.Errorf("redactKeyMaterial(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// render returns everything a reader of the message could see: the blocks'
// texts and the fallback text.
func render(t *testing.T, ev Event) (blocks, text string) {
	t.Helper()
	text, bs := Blocks(ev)
	raw, err := json.Marshal(bs)
	if err != nil {
		t.Fatalf("marshal blocks: %v", err)
	}
	return blockText(t, string(raw)), text
}

func TestBlocks(t *testing.T) {
	t.Run("grace deadline relative to the event", func(t *testing.T) {
		for _, tc := range []struct {
			after time.Duration
			want  string
		}{
			{7 * 24 * time.Hour, "2025-03-08T03:00:00Z (in 7d)"},
			{7*24*time.Hour - time.Hour, "2025-03-08T02:00:00Z (in 6d 23h)"},
			{90 * time.Minute, "2025-03-01T04:30:00Z (in 1h 30m)"},
			{-90 * time.Minute, "2025-03-01T01:30:00Z (1h 30m ago)"},
			{0, "2025-03-01T03:00:00Z (now)"},
		} {
			ev := rotatedEvent()
			ev.GraceDeadline = t0.Add(tc.after).In(time.FixedZone("CET", 3600))
			if blocks, _ := render(t, ev); !strings.Contains(blocks, "*Grace deadline*\n"+tc.want) {
				t.Errorf("deadline %v after the event: blocks lack %q:\n%s", tc.after, tc.want, blocks)
			}
		}
	})

	t.Run("free text cannot mention the channel", func(t *testing.T) {
		ev := rotatedEvent()
		ev.Kind, ev.Error, ev.Detail = policy.EventFailed, "provider says <!channel> & <@U123>", "see <https://evil|here>"
		blocks, text := render(t, ev)
		for _, s := range []string{blocks, text} {
			if strings.Contains(s, "<!channel>") || strings.Contains(s, "<@U123>") || strings.Contains(s, "<https://evil") {
				t.Errorf("unescaped mention or link in %q", s)
			}
		}
		if !strings.Contains(blocks, "&lt;!channel&gt; &amp; &lt;@U123&gt;") {
			t.Errorf("error text not shown escaped:\n%s", blocks)
		}
	})

	t.Run("long texts are cut to Slack's limits", func(t *testing.T) {
		ev := rotatedEvent()
		ev.Policy = strings.Repeat("p", 200)
		ev.Kind, ev.Error, ev.Detail = policy.EventFailed, strings.Repeat("e", 5000), strings.Repeat("d", 5000)
		text, bs := Blocks(ev)
		raw, _ := json.Marshal(bs)
		var decoded []struct {
			Type string `json:"type"`
			Text struct {
				Text string `json:"text"`
			} `json:"text"`
			Fields []struct {
				Text string `json:"text"`
			} `json:"fields"`
		}
		if err := json.Unmarshal(raw, &decoded); err != nil {
			t.Fatal(err)
		}
		for _, b := range decoded {
			limit := maxSection
			if b.Type == "header" {
				limit = maxHeader
			}
			if n := utf8.RuneCountInString(b.Text.Text); n > limit {
				t.Errorf("%s block text has %d characters, Slack allows %d", b.Type, n, limit)
			}
			for _, f := range b.Fields {
				if n := utf8.RuneCountInString(f.Text); n > maxField {
					t.Errorf("field has %d characters, Slack allows %d", n, maxField)
				}
			}
		}
		if n := utf8.RuneCountInString(text); n > maxText {
			t.Errorf("fallback text has %d characters, want at most %d", n, maxText)
		}
		if !strings.Contains(decoded[2].Text.Text, "…") {
			t.Errorf("cut error text is not marked as cut")
		}
	})

	t.Run("planted key material is redacted everywhere", func(t *testing.T) {
		ev := rotatedEvent()
		ev.Kind = policy.EventFailed
		ev.Error = "upload: provider echoed " + plantedPEM
		ev.Detail = "response: " + strings.ReplaceAll(plantedPEM, "\n", `\n`)
		ev.KeyName = plantedPEM
		blocks, text := render(t, ev)
		for _, s := range []string{blocks, text} {
			if strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "b3BlbnNzaC1rZXktdjE") {
				t.Errorf("key material in the message:\n%s", s)
			}
		}
		if !strings.Contains(blocks, "upload: provider echoed [REDACTED]") {
			t.Errorf("error text lost its context around the redaction:\n%s", blocks)
		}
	})

	t.Run("unknown kind still renders", func(t *testing.T) {
		ev := rotatedEvent()
		ev.Kind = "reconciled"
		if blocks, _ := render(t, ev); !strings.HasPrefix(blocks, ":information_source: gpu-team reconciled") {
			t.Errorf("header = %q", strings.SplitN(blocks, "\n", 2)[0])
		}
	})
}
