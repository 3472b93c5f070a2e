package interlock_test

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

// TestInvalidArgumentNamesTheField pins that a refused run's *Error carries
// the router's reason, the field in its metadata and a field violation
// naming the proto field, and is not retryable.
func TestInvalidArgumentNamesTheField(t *testing.T) {
	client := newClient(t, live.APIKey)
	_, err := client.RunText(testContext(t), &interlockv1.RunRequest{Message: "hi", EndUserId: ""})
	var callErr *interlock.Error
	if !errors.As(err, &callErr) || callErr.Code != codes.InvalidArgument || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error %#v", err)
	}
	if callErr.Reason != "INVALID_ARGUMENT" || callErr.Metadata["field"] != "end_user_id" || callErr.Retryable || callErr.RetryDelay != 0 {
		t.Fatalf("details %+v", callErr)
	}
	if len(callErr.FieldViolations) != 1 || callErr.FieldViolations[0].Field != "end_user_id" || callErr.FieldViolations[0].Description == "" {
		t.Fatalf("field violations %+v", callErr.FieldViolations)
	}
}

// TestUnaryCallsFailWithDetails pins that the stubs' unary calls fail with an
// *Error too: a nested field's violation is its dotted path, and NOT_FOUND
// carries its reason.
func TestUnaryCallsFailWithDetails(t *testing.T) {
	client := newClient(t, live.APIKey)
	ctx := testContext(t)
	_, err := client.Agents.PutAgent(ctx, &interlockv1.PutAgentRequest{Agent: &interlockv1.Agent{Slug: "Not A Slug"}})
	var invalid *interlock.Error
	if !errors.As(err, &invalid) || invalid.Code != codes.InvalidArgument || len(invalid.FieldViolations) != 1 ||
		invalid.FieldViolations[0].Field != "agent.slug" {
		t.Fatalf("put agent: %#v", err)
	}
	_, err = client.Conversations.GetConversation(ctx, &interlockv1.GetConversationRequest{EndUserId: "u-1", SessionId: "conv_nope"})
	var missing *interlock.Error
	if !errors.As(err, &missing) || missing.Code != codes.NotFound || missing.Reason != "NOT_FOUND" || missing.FieldViolations != nil {
		t.Fatalf("get conversation: %#v", err)
	}
}

// TestProviderDownIsRetryableWithADelay pins that a provider failing before
// the run's first event is an Unavailable *Error naming the provider, with
// the router's suggested delay.
func TestProviderDownIsRetryableWithADelay(t *testing.T) {
	client := newClient(t, live.APIKey)
	// One 503 per attempt the daemon makes (its providers' max_attempts, 3).
	down := []step{{"error", 503, "down"}}
	live.enqueue(t, down, down, down)
	_, err := client.RunText(testContext(t), &interlockv1.RunRequest{Message: "hi", EndUserId: "u-down"})
	var callErr *interlock.Error
	if !errors.As(err, &callErr) || callErr.Code != codes.Unavailable {
		t.Fatalf("error %#v", err)
	}
	if callErr.Reason != "PROVIDER_UNAVAILABLE" || callErr.Metadata["provider"] != "fake" || !callErr.Retryable || callErr.RetryDelay <= 0 {
		t.Fatalf("details %+v", callErr)
	}
	if keys := slices.Sorted(maps.Keys(callErr.Metadata)); !slices.Equal(keys, []string{"provider"}) {
		t.Fatalf("metadata %v", callErr.Metadata)
	}
}
