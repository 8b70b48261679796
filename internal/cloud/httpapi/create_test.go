package httpapi

import (
	"context"
	"errors"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
)

func TestCreateOrFind(t *testing.T) {
	transient := &cloud.Error{Provider: "p", Op: "create", Status: 502, Class: cloud.ErrTransient}
	permanent := &cloud.Error{Provider: "p", Op: "create", Status: 400, Class: cloud.ErrPermanent}
	listDenied := &cloud.Error{Provider: "p", Op: "list", Status: 401, Message: "bad key", Class: cloud.ErrUnauthorized}
	tests := []struct {
		name        string
		creates     []error // outcome of each create call; past the end: success
		found       []bool  // outcome of each find call
		findErr     error
		want        string // "" when an error is wanted
		wantClass   error
		wantCreates int
		wantFinds   int
	}{
		{name: "success first time", want: "created", wantCreates: 1},
		{name: "permanent error not looked up", creates: []error{permanent}, wantClass: cloud.ErrPermanent, wantCreates: 1},
		{name: "ambiguous then found", creates: []error{transient}, found: []bool{true}, want: "found", wantCreates: 1, wantFinds: 1},
		{name: "ambiguous, absent, created again", creates: []error{transient}, found: []bool{false}, want: "created", wantCreates: 2, wantFinds: 1},
		{name: "always ambiguous and absent: bounded", creates: []error{transient, transient, transient, transient}, found: []bool{false, false, false, false},
			wantClass: cloud.ErrTransient, wantCreates: 3, wantFinds: 3},
		{name: "lookup fails", creates: []error{transient}, findErr: listDenied, wantClass: cloud.ErrUnauthorized, wantCreates: 1, wantFinds: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			c := newTestClient(t, "http://127.0.0.1:1", rec, nil) // MaxAttempts 3
			creates, finds := 0, 0
			got, err := CreateOrFind(context.Background(), c, "k1",
				func(context.Context) (string, error) {
					creates++
					if creates <= len(tt.creates) && tt.creates[creates-1] != nil {
						return "", tt.creates[creates-1]
					}
					return "created", nil
				},
				func(context.Context) (string, bool, error) {
					finds++
					if tt.findErr != nil {
						return "", false, tt.findErr
					}
					if tt.found[finds-1] {
						return "found", true, nil
					}
					return "", false, nil
				})
			if creates != tt.wantCreates || finds != tt.wantFinds {
				t.Errorf("creates %d finds %d, want %d and %d", creates, finds, tt.wantCreates, tt.wantFinds)
			}
			if tt.wantClass != nil {
				if !errors.Is(err, tt.wantClass) {
					t.Fatalf("error %v, want class %v", err, tt.wantClass)
				}
				var ce *cloud.Error
				if !errors.As(err, &ce) || ce.Op != "create" {
					t.Errorf("error %v is not a create *cloud.Error", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
