package secret

import (
	"cmp"
	"slices"
	"strings"
)

// MinScrubLen is the length in bytes below which Scrub leaves a value
// alone. A shorter value is no credential worth the name, and replacing it
// does harm: an API key "1" would turn every 1 in an error into Redacted
// (`Get "http://[REDACTED]27.0.0.[REDACTED]:2/..."`), garbling the message
// and revealing the key by the pattern of its replacements. Every adapter
// scrubs through Scrub, so the rule is the same everywhere.
const MinScrubLen = 6

// Scrub returns s with every occurrence of each secret of at least
// MinScrubLen bytes replaced by Redacted. Adapters use it on text that
// comes back from a server (error messages, request IDs, transport errors),
// which may echo the credential it was sent. Longer secrets are replaced
// first, so a secret that contains another is replaced whole.
func Scrub(s string, secrets ...Secret) string {
	if s == "" || len(secrets) == 0 {
		return s
	}
	if len(secrets) == 1 {
		return scrubOne(s, secrets[0])
	}
	sorted := slices.Clone(secrets)
	slices.SortFunc(sorted, func(a, b Secret) int { return cmp.Compare(len(b), len(a)) })
	for _, v := range sorted {
		s = scrubOne(s, v)
	}
	return s
}

func scrubOne(s string, v Secret) string {
	if len(v) < MinScrubLen || !strings.Contains(s, string(v)) {
		return s
	}
	return strings.ReplaceAll(s, string(v), Redacted)
}
