package interlock_test

import (
	"errors"
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

// TestLedgerAndConnsCarryTheirKeys pins which key reaches the daemon: the
// Ledger stub of a client with an API key reads its own sandbox, of one with
// only the operator key a named sandbox; Conn's raw stubs carry the API key
// and OperatorConn's the operator key, and fail with *interlock.Error too.
func TestLedgerAndConnsCarryTheirKeys(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t, live.APIKey, interlock.WithOperatorKey(live.OperatorKey))
	live.enqueue(t, []step{{"text", "Billed."}, {"usage", 12, 3}})
	outcome, err := client.RunText(ctx, &interlockv1.RunRequest{Message: "bill me", EndUserId: "u-keys"})
	if err != nil {
		t.Fatal(err)
	}
	filter := &interlockv1.LedgerFilter{EndUserId: "u-keys"}
	onlyRun := func(what string, page *interlockv1.ListLedgerEntriesResponse, err error) {
		t.Helper()
		if err != nil || len(page.GetEntries()) != 1 || page.GetEntries()[0].GetRunId() != outcome.RunID ||
			page.GetEntries()[0].GetUsage().GetInputTokens() != 12 {
			t.Fatalf("%s: %v, %v", what, err, page)
		}
	}
	page, err := client.Ledger.ListLedgerEntries(ctx, &interlockv1.ListLedgerEntriesRequest{Filter: filter})
	onlyRun("the API key's ledger", page, err)

	operator := newClient(t, "", interlock.WithOperatorKey(live.OperatorKey))
	page, err = operator.Ledger.ListLedgerEntries(ctx, &interlockv1.ListLedgerEntriesRequest{SandboxId: live.SandboxID, Filter: filter})
	onlyRun("the operator key's ledger", page, err)
	_, err = operator.Ledger.ListLedgerEntries(ctx, &interlockv1.ListLedgerEntriesRequest{Filter: filter})
	var unnamed *interlock.Error
	if !errors.As(err, &unnamed) || len(unnamed.FieldViolations) != 1 || unnamed.FieldViolations[0].Field != "sandbox_id" {
		t.Fatalf("the operator's ledger without a sandbox: %v", err)
	}

	page, err = interlockv1.NewLedgerClient(client.OperatorConn()).ListLedgerEntries(ctx,
		&interlockv1.ListLedgerEntriesRequest{SandboxId: live.SandboxID, Filter: filter})
	onlyRun("OperatorConn's ledger", page, err)
	page, err = interlockv1.NewLedgerClient(client.Conn()).ListLedgerEntries(ctx, &interlockv1.ListLedgerEntriesRequest{Filter: filter})
	onlyRun("Conn's ledger", page, err)
	_, err = interlockv1.NewAgentsClient(client.OperatorConn()).ListAgents(ctx, &interlockv1.ListAgentsRequest{})
	var refused *interlock.Error
	if !errors.As(err, &refused) || refused.Code != codes.Unauthenticated {
		t.Fatalf("agents with the operator key: %#v", err)
	}
}
