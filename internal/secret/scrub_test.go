package secret

import (
	"strings"
	"testing"
)

func TestScrub(t *testing.T) {
	const msg = `Get "http://127.0.0.1:2/gpu-cloud/ssh-keys": dial tcp 127.0.0.1:2: connect: connection refused`
	tests := []struct {
		name    string
		in      string
		secrets []Secret
		want    string
	}{
		{name: "one-character secret keeps the message intact", in: msg, secrets: []Secret{"1"}, want: msg},
		{name: "just below the minimum", in: "key 12345 rejected", secrets: []Secret{"12345"}, want: "key 12345 rejected"},
		{name: "at the minimum", in: "key 123456 rejected", secrets: []Secret{"123456"}, want: "key " + Redacted + " rejected"},
		{name: "realistic key, every occurrence", in: "API key sk-live-0123456789abcdef is invalid (key=sk-live-0123456789abcdef)",
			secrets: []Secret{"sk-live-0123456789abcdef"}, want: "API key " + Redacted + " is invalid (key=" + Redacted + ")"},
		{name: "secret containing another is replaced whole", in: "token abcdef-123456 and abcdef",
			secrets: []Secret{"abcdef", "abcdef-123456"}, want: "token " + Redacted + " and " + Redacted},
		{name: "empty secret ignored", in: "nothing to hide", secrets: []Secret{""}, want: "nothing to hide"},
		{name: "no secrets", in: "nothing to hide", want: "nothing to hide"},
		{name: "short and long together", in: "1 sk-live-0123456789abcdef 1", secrets: []Secret{"1", "sk-live-0123456789abcdef"},
			want: "1 " + Redacted + " 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Scrub(tt.in, tt.secrets...)
			if got != tt.want {
				t.Errorf("Scrub(%q) = %q, want %q", tt.in, got, tt.want)
			}
			for _, s := range tt.secrets {
				if len(s) >= MinScrubLen && strings.Contains(got, string(s)) {
					t.Errorf("Scrub left %q in %q", s, got)
				}
			}
		})
	}
}
