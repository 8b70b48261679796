package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecret_NeverPrints(t *testing.T) {
	const value = "hunter2-very-secret"
	s := Secret(value)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("msg", "token", s)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("msg", "token", s)
	j, _ := json.Marshal(struct{ T Secret }{s})
	outputs := []string{
		fmt.Sprintf("%s %v %+v %#v %q", s, s, s, s, s),
		fmt.Sprint(s),
		buf.String(),
		string(j),
		fmt.Errorf("wrap: %v", s).Error(),
	}
	for _, out := range outputs {
		if strings.Contains(out, value) {
			t.Errorf("secret leaked in %q", out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("output %q does not show the redaction marker", out)
		}
	}
	if s.Reveal() != value {
		t.Fatalf("Reveal() = %q, want the value", s.Reveal())
	}
}
