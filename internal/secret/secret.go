// Package secret holds the one type every adapter uses for credentials and
// private keys, so that printing, logging or marshalling one by accident
// shows a placeholder instead of the value.
package secret

import (
	"encoding/json"
	"log/slog"
)

// Redacted is what a Secret shows wherever it is printed, logged or marshalled.
const Redacted = "[REDACTED]"

// Secret is a string that must never reach a log line, an error, state,
// Slack, a report or a metric. Only Reveal returns the value, and callers
// use it exactly where the value must cross a wire (an HTTP header, a Vault
// write).
type Secret string

// Reveal returns the secret value. Keep the result out of errors and logs.
func (s Secret) Reveal() string { return string(s) }

// Empty reports whether no value is set.
func (s Secret) Empty() bool { return s == "" }

// String redacts the value so fmt verbs (%s, %v) cannot leak it.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString redacts the value for %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts the value in log/slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON redacts the value in JSON.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText redacts the value for encoders that use encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
