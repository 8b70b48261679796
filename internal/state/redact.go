package state

import (
	"bytes"
	"regexp"
)

var privateKeyMarker = []byte("PRIVATE KEY")

// scrubPrivateKeys replaces PEM private key blocks inside the JSON
// document b. The record types have no field for a private key, but an
// error message can quote a provider response that carries one (Gcore
// returns private_key when it generates the pair), and the state file must
// never hold one.
func scrubPrivateKeys(b []byte) []byte {
	if !bytes.Contains(b, privateKeyMarker) {
		return b
	}
	b = pemBlock.ReplaceAll(b, redactedKey)
	b = pemTail.ReplaceAll(b, redactedKey)
	if bytes.Contains(b, privateKeyMarker) {
		// A fragment without its BEGIN line: drop the whole string.
		b = jsonStringWithMarker.ReplaceAll(b, []byte(`"`+string(redactedKey)+`"`))
	}
	return b
}

// redactedKey replaces key material. It must not itself contain
// "PRIVATE KEY", so that a grep of the raw file stays a valid leak check.
var redactedKey = []byte("[redacted key material]")

// The patterns run over JSON-encoded bytes, where a PEM block's newlines
// are the two characters \n and a string ends at an unescaped quote.
var (
	// A whole block, BEGIN to END.
	pemBlock = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[^"\\]|\\.)*?-----END [A-Z0-9 ]*PRIVATE KEY-----`)
	// A block cut short (a truncated message): up to the end of the string.
	pemTail = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[^"\\]|\\.)*`)
	// Any JSON string still mentioning a private key. Between two JSON
	// strings there is only punctuation, so a match cannot start on a
	// closing quote and swallow the next string.
	jsonStringWithMarker = regexp.MustCompile(`"(?:[^"\\]|\\.)*PRIVATE KEY(?:[^"\\]|\\.)*"`)
)
