package cloud

import (
	"errors"
	"testing"
)

func TestError_Error(t *testing.T) {
	cause := errors.New("unexpected EOF")
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"op only", &Error{Provider: "p", Op: "list", Class: ErrTransient}, "p: list"},
		{"everything", &Error{Provider: "gcore-prod", Op: "list instances", Subject: "region 76", Status: 503,
			Message: "maintenance", RequestID: "r-1", Class: ErrTransient, Err: cause},
			"gcore-prod: list instances (region 76): HTTP 503: maintenance: unexpected EOF (request_id r-1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, tt.err.Class) {
				t.Errorf("errors.Is(err, %v) = false", tt.err.Class)
			}
		})
	}
	joined := errors.Join(&Error{Provider: "p", Op: "list instances", Subject: "region 1", Class: ErrTransient},
		&Error{Provider: "p", Op: "list instances", Subject: "region 2", Class: ErrPermanent})
	var e *Error
	if !errors.Is(joined, ErrTransient) || !errors.Is(joined, ErrPermanent) || !errors.As(joined, &e) || e.Subject != "region 1" {
		t.Errorf("joined partial-listing errors lose their classes or subjects: %v", joined)
	}
}
