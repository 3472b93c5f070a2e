package interlock_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

// Stream one turn. The daemon's address and a sandbox API key come from the
// environment, as with the interlock CLI.
func Example() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for event, err := range client.Run(ctx, &interlockv1.RunRequest{
		System:    "You are a support agent.",
		Message:   "Where is my order?",
		EndUserId: "u-123",
	}) {
		if status.Code(err) == codes.Unauthenticated {
			log.Fatal("check INTERLOCK_API_KEY: ", err)
		} else if err != nil {
			log.Fatal(err)
		}
		switch e := event.Event.(type) {
		case *interlockv1.AgentEvent_TextDelta:
			fmt.Print(e.TextDelta.Text)
		case *interlockv1.AgentEvent_ToolCall:
			log.Printf("→ %s(%s)", e.ToolCall.Name, e.ToolCall.ArgumentsJson)
		case *interlockv1.AgentEvent_Finish:
			fmt.Println()
		case *interlockv1.AgentEvent_Error:
			log.Fatalf("run failed: %s: %s", e.Error.Code, e.Error.Message)
		}
	}
	// Output: Hello from the fake.
}

// sendToUser stands for sending the end user's browser to a URL (a redirect
// in your web app's answer). Here the harness plays an end user who approves
// at GitHub.
var sendToUser = func(url string) {
	if _, err := live.authorize("approve", url); err != nil {
		log.Fatal(err)
	}
}

// Connect GitHub for an end user: their runs are offered GitHub's tools from
// then on, whichever provider runs them.
func ExampleClient_WaitConnected() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	started, err := client.Integrations.Connect(ctx, &interlockv1.ConnectRequest{App: "github", EndUserId: "u-42"})
	if status.Code(err) == codes.InvalidArgument {
		log.Fatal("the daemon does not configure github: ", err)
	} else if err != nil {
		log.Fatal(err)
	}
	sendToUser(started.AuthorizeUrl)
	integration, err := client.WaitConnected(ctx, started.FlowId)
	var failed *interlock.ConnectError
	if errors.As(err, &failed) {
		log.Fatalf("not connected (%s): %s", failed.State, failed.Reason)
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected", integration.App, "as", integration.Account)
	// Output: connected github as octocat
}

// TestReadmeExamplesAreTheExamples pins that every Go block of README.md
// after the quickstart (see TestReadmeQuickstartIsTheExample) is the body of
// an example of this file, as written, so that the README shows code the
// suite runs.
func TestReadmeExamplesAreTheExamples(t *testing.T) {
	source, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, "go")
	if len(blocks) < 2 {
		t.Fatalf("README.md has %d Go blocks, want the quickstart and an example", len(blocks))
	}
	for _, block := range blocks[1:] {
		// The block de-indented by one tab: indent it back, blank lines stay empty.
		indented := regexp.MustCompile("(?m)^(.)").ReplaceAllString(block, "\t$1")
		if !strings.Contains(string(source), "{\n"+indented) {
			t.Errorf("this README block is no example's body:\n%s", block)
		}
	}
}

// Administer sandboxes with the operator key: a sandbox per tenant of yours,
// its API keys, quotas and secrets (values are write-only).
func Example_sandboxes() {
	admin, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), "",
		interlock.WithOperatorKey(os.Getenv("INTERLOCK_OPERATOR_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created, err := admin.Sandboxes.CreateSandbox(ctx, &interlockv1.CreateSandboxRequest{
		Name:   "acme",
		Quotas: &interlockv1.Quotas{MaxConcurrentRuns: 5},
	})
	if err != nil {
		log.Fatal(err)
	}
	sandboxID := created.Sandbox.SandboxId
	key, err := admin.Sandboxes.CreateApiKey(ctx, &interlockv1.CreateApiKeyRequest{SandboxId: sandboxID, Name: "backend"})
	if err != nil {
		log.Fatal(err)
	}
	// key.Secret is shown once: hand it to the tenant's backend now.
	fmt.Println("key", key.ApiKey.Name, strings.HasPrefix(key.Secret, "ilk_"))

	_, err = admin.Sandboxes.SetSecret(ctx, &interlockv1.SetSecretRequest{SandboxId: sandboxID, Name: "anthropic_api_key", Value: "sk-ant-..."})
	if err != nil {
		log.Fatal(err)
	}
	secrets, err := admin.Sandboxes.ListSecrets(ctx, &interlockv1.ListSecretsRequest{SandboxId: sandboxID})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("secrets", secrets.Names)

	_, err = admin.Sandboxes.SetQuotas(ctx, &interlockv1.SetQuotasRequest{SandboxId: sandboxID, Quotas: &interlockv1.Quotas{MaxConcurrentRuns: 10}})
	if err != nil {
		log.Fatal(err)
	}
	got, err := admin.Sandboxes.GetSandbox(ctx, &interlockv1.GetSandboxRequest{SandboxId: sandboxID})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.Sandbox.Name, "runs at most", got.Sandbox.Quotas.MaxConcurrentRuns, "at once")

	if _, err := admin.Sandboxes.DeleteSandbox(ctx, &interlockv1.DeleteSandboxRequest{SandboxId: sandboxID}); err != nil {
		log.Fatal(err)
	}
	// Output:
	// key backend true
	// secrets [anthropic_api_key]
	// acme runs at most 10 at once
}

// Read an end user's conversations back, then delete one (its entries go
// with it).
func Example_conversations() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.RunText(ctx, &interlockv1.RunRequest{Message: "Hi!", EndUserId: "u-history"}); err != nil {
		log.Fatal(err)
	}
	listed, err := client.Conversations.ListConversations(ctx, &interlockv1.ListConversationsRequest{EndUserId: "u-history"})
	if err != nil {
		log.Fatal(err)
	}
	for _, conversation := range listed.Conversations {
		got, err := client.Conversations.GetConversation(ctx, &interlockv1.GetConversationRequest{
			EndUserId: "u-history",
			SessionId: conversation.SessionId,
		})
		if err != nil {
			log.Fatal(err)
		}
		for _, entry := range got.Entries {
			fmt.Printf("%s: %s\n", strings.TrimPrefix(entry.Kind.String(), "ENTRY_KIND_"), entry.Text)
		}
		_, err = client.Conversations.DeleteConversation(ctx, &interlockv1.DeleteConversationRequest{
			EndUserId: "u-history",
			SessionId: conversation.SessionId,
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// USER: Hi!
	// ASSISTANT: Hello from the fake.
}

// Save an agent (provider, model, system prompt, tools) and run it by its
// slug. INTERLOCK_PROVIDER names a provider configured on the daemon
// ("local" under make serve).
func Example_agents() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = client.Agents.PutAgent(ctx, &interlockv1.PutAgentRequest{Agent: &interlockv1.Agent{
		Slug:     "support",
		Name:     "Support agent",
		System:   "You are a support agent. Be brief.",
		Provider: cmp.Or(os.Getenv("INTERLOCK_PROVIDER"), "local"),
		Tools:    []string{"search_conversations"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	outcome, err := client.RunText(ctx, &interlockv1.RunRequest{Agent: "support", Message: "Hi!", EndUserId: "u-123"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(outcome.Text())

	agents, err := client.Agents.ListAgents(ctx, &interlockv1.ListAgentsRequest{})
	if err != nil {
		log.Fatal(err)
	}
	for _, agent := range agents.Agents {
		fmt.Println(agent.Slug, agent.Name, agent.Tools)
	}
	if _, err := client.Agents.DeleteAgent(ctx, &interlockv1.DeleteAgentRequest{Slug: "support"}); err != nil {
		log.Fatal(err)
	}
	_, err = client.Agents.GetAgent(ctx, &interlockv1.GetAgentRequest{Slug: "support"})
	fmt.Println(status.Code(err))
	// Output:
	// Hello from the fake.
	// support Support agent [search_conversations]
	// NotFound
}

// Add up what an end user's runs cost. A client with an API key reads its
// own sandbox's ledger; with only the operator key, name the sandbox.
func Example_ledger() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.RunText(ctx, &interlockv1.RunRequest{Message: "Hi!", EndUserId: "u-billed"}); err != nil {
		log.Fatal(err)
	}
	filter := &interlockv1.LedgerFilter{EndUserId: "u-billed"}
	usage, err := client.Ledger.SummarizeUsage(ctx, &interlockv1.SummarizeUsageRequest{
		Filter:  filter,
		GroupBy: interlockv1.UsageGroupBy_USAGE_GROUP_BY_PROVIDER,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, group := range usage.Summaries {
		fmt.Printf("%s: %d runs, $%.4f\n", group.Key, group.RunCount, group.TotalCostUsd)
	}
	// Entry by entry, newest first, a page at a time.
	request := &interlockv1.ListLedgerEntriesRequest{Filter: filter}
	for {
		page, err := client.Ledger.ListLedgerEntries(ctx, request)
		if err != nil {
			log.Fatal(err)
		}
		for _, entry := range page.Entries {
			fmt.Println(entry.Kind, entry.Provider, entry.Usage.GetInputTokens() > 0)
		}
		if page.NextPageToken == "" {
			break
		}
		request.PageToken = page.NextPageToken
	}
	// Output:
	// fake: 1 runs, $0.0000
	// LEDGER_ENTRY_KIND_TOKENS fake true
}

// Pause an agent provider's runs in every sandbox (a kill switch, e.g.
// during an incident at the provider; the operator key), see a run refused
// with the pause's reason, then clear it. INTERLOCK_PROVIDER names the
// provider ("local" under make serve).
func Example_compute() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"),
		interlock.WithOperatorKey(os.Getenv("INTERLOCK_OPERATOR_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pause := &interlockv1.SetPauseRequest{
		Scope:  interlockv1.PauseScope_PAUSE_SCOPE_AGENT_PROVIDER,
		Target: cmp.Or(os.Getenv("INTERLOCK_PROVIDER"), "local"),
		Reason: "incident 1234 at the provider",
	}
	if _, err := client.Compute.SetPause(ctx, pause); err != nil {
		log.Fatal(err)
	}
	_, err = client.RunText(ctx, &interlockv1.RunRequest{Message: "Hi!", EndUserId: "u-123"})
	var refused *interlock.Error
	if errors.As(err, &refused) {
		fmt.Println(refused.Code, strings.Contains(refused.Message, "incident 1234"))
	}
	_, err = client.Compute.ClearPause(ctx, &interlockv1.ClearPauseRequest{
		Scope:     pause.Scope,
		SandboxId: pause.SandboxId,
		Target:    pause.Target,
	})
	if err != nil {
		log.Fatal(err)
	}
	outcome, err := client.RunText(ctx, &interlockv1.RunRequest{Message: "Hi!", EndUserId: "u-123"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(outcome.Text())

	// Where self-hosted runtimes run: the compute providers, best first.
	providers, err := client.Compute.ListComputeProviders(ctx, &interlockv1.ListComputeProvidersRequest{})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range providers.Providers {
		log.Printf("compute provider %s: healthy %v", p.Name, p.Healthy)
	}
	// Output:
	// FailedPrecondition true
	// Hello from the fake.
}

// Tell a request to fix from a call to retry, and a call you cancelled from
// one that failed.
func Example_errors() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = client.RunText(ctx, &interlockv1.RunRequest{Message: "Hi!"}) // no EndUserId
	var failed *interlock.Error
	if errors.As(err, &failed) {
		switch {
		case failed.Code == codes.InvalidArgument:
			for _, v := range failed.FieldViolations {
				fmt.Println("fix", v.Field) // v.Description says what is wrong
			}
		case failed.Retryable:
			log.Printf("retry in %v: %s (%s)", failed.RetryDelay, failed.Message, failed.Reason)
		default:
			log.Fatal(err)
		}
	}

	stopped, stop := context.WithCancel(ctx)
	stop()
	_, err = client.RunText(stopped, &interlockv1.RunRequest{Message: "Hi!", EndUserId: "u-123"})
	fmt.Println(errors.Is(err, context.Canceled))
	// Output:
	// fix end_user_id
	// true
}

// Retry a turn that a restart of the daemon or a lost connection cut short.
// With the same RequestId, the daemon resumes the run where it stopped (its
// stream repeats what was recorded, then carries on) instead of running the
// turn twice, and replays a run that had ended.
func Example_retry() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	request := &interlockv1.RunRequest{
		Message:   "Where is my order?",
		EndUserId: "u-123",
		RequestId: "order-42-turn-1", // one per turn of yours, reused by its retries
	}
	var outcome *interlock.Outcome
	for attempt := 1; ; attempt++ {
		outcome, err = client.RunText(ctx, request)
		var refused *interlock.Error   // the call failed: the daemon was down, the connection lost
		var failed *interlock.RunError // the run said so: the daemon shut down under it
		retryable := errors.As(err, &refused) && refused.Retryable || errors.As(err, &failed) && failed.Retryable
		if !retryable || attempt == 5 {
			break
		}
		delay := time.Duration(attempt) * time.Second
		if refused != nil {
			delay = max(delay, refused.RetryDelay)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			log.Fatal(ctx.Err())
		}
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(outcome.Text())
	// Output: Hello from the fake.
}
