package interlock_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

// TestOperatorCreatesASandboxWhoseKeyRunsTurns pins the Sandboxes and
// Conversations stubs: each carries its own key, and a new sandbox's key
// runs turns and reads only its end user's conversations.
func TestOperatorCreatesASandboxWhoseKeyRunsTurns(t *testing.T) {
	ctx := testContext(t)
	operator := newClient(t, "", interlock.WithOperatorKey(live.OperatorKey))
	created, err := operator.Sandboxes.CreateSandbox(ctx, &interlockv1.CreateSandboxRequest{
		Name:   "acme-go",
		Quotas: &interlockv1.Quotas{MaxConcurrentRuns: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	sandboxID := created.GetSandbox().GetSandboxId()
	key, err := operator.Sandboxes.CreateApiKey(ctx, &interlockv1.CreateApiKeyRequest{SandboxId: sandboxID, Name: "backend"})
	if err != nil {
		t.Fatal(err)
	}

	tenant := newClient(t, key.GetSecret())
	outcome, err := tenant.RunText(ctx, &interlockv1.RunRequest{Message: "Hello", EndUserId: "alice"})
	if err != nil || outcome.Text() != "Hello from the fake." {
		t.Fatalf("run: %v, %q", err, outcome.Text())
	}
	listed, err := tenant.Conversations.ListConversations(ctx, &interlockv1.ListConversationsRequest{EndUserId: "alice"})
	if err != nil || len(listed.GetConversations()) != 1 || listed.GetConversations()[0].GetSessionId() != outcome.SessionID {
		t.Fatalf("list: %v, %v", err, listed)
	}
	_, err = tenant.Conversations.GetConversation(ctx, &interlockv1.GetConversationRequest{EndUserId: "bob", SessionId: outcome.SessionID})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("another end user's conversation: %v", err)
	}

	_, err = operator.Sandboxes.RevokeApiKey(ctx, &interlockv1.RevokeApiKeyRequest{SandboxId: sandboxID, KeyId: key.GetApiKey().GetKeyId()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tenant.RunText(ctx, &interlockv1.RunRequest{Message: "Again", EndUserId: "alice"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked key: %v", err)
	}
}

// TestSecretsAreWriteOnly pins the secrets calls: names are listed, values never returned.
func TestSecretsAreWriteOnly(t *testing.T) {
	ctx := testContext(t)
	operator := newClient(t, "", interlock.WithOperatorKey(live.OperatorKey))
	_, err := operator.Sandboxes.SetSecret(ctx, &interlockv1.SetSecretRequest{SandboxId: live.SandboxID, Name: "anthropic_api_key", Value: "sk-ant-test"})
	if err != nil {
		t.Fatal(err)
	}
	listed, err := operator.Sandboxes.ListSecrets(ctx, &interlockv1.ListSecretsRequest{SandboxId: live.SandboxID})
	if err != nil || !slices.Equal(listed.GetNames(), []string{"anthropic_api_key"}) {
		t.Fatalf("list: %v, %v", err, listed)
	}
	if _, err := operator.Sandboxes.DeleteSecret(ctx, &interlockv1.DeleteSecretRequest{SandboxId: live.SandboxID, Name: "anthropic_api_key"}); err != nil {
		t.Fatal(err)
	}
}
