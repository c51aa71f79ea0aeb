package tenant

import (
	"context"
	"errors"
	"testing"
)

func TestFromContext_RoundTripAndMissing(t *testing.T) {
	if _, err := FromContext(context.Background()); !errors.Is(err, ErrNoTenant) {
		t.Fatalf("bare context: err %v, want ErrNoTenant", err)
	}
	if _, err := FromContext(With(context.Background(), "")); !errors.Is(err, ErrNoTenant) {
		t.Fatalf("empty tenant: err %v, want ErrNoTenant", err)
	}
	ctx, cancel := context.WithCancel(With(context.Background(), "team-a"))
	defer cancel()
	if got, err := FromContext(ctx); err != nil || got != "team-a" {
		t.Fatalf("child context: got %q, %v; want team-a", got, err)
	}
	// The innermost With wins: a handler may re-scope a request.
	if got, _ := FromContext(With(ctx, "team-b")); got != "team-b" {
		t.Fatalf("re-scoped: got %q, want team-b", got)
	}
}
