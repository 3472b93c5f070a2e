package interlock_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

func newClient(t *testing.T, apiKey string, opts ...interlock.Option) *interlock.Client {
	t.Helper()
	client, err := interlock.NewClient(live.Address, apiKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func kinds(events []*interlockv1.AgentEvent) []string {
	var out []string
	for _, e := range events {
		name := string(e.ProtoReflect().WhichOneof(e.ProtoReflect().Descriptor().Oneofs().ByName("event")).Name())
		out = append(out, name)
	}
	return out
}

// TestRunStreamsTextToolCallAndFinish pins a turn's event stream: text, a
// tool call and its result, more text, then Finish with the summed usage.
func TestRunStreamsTextToolCallAndFinish(t *testing.T) {
	client := newClient(t, live.APIKey)
	live.enqueue(t,
		[]step{{"text", "Let me look. "}, {"tool_call", "search_conversations", `{"query": "order"}`}, {"usage", 30, 2}},
		[]step{{"text", "Your order ", "shipped."}, {"usage", 40, 5}},
	)
	var events []*interlockv1.AgentEvent
	for event, err := range client.Run(testContext(t), &interlockv1.RunRequest{
		Provider:  "fake",
		Model:     "fake-model",
		System:    "You are a support agent.",
		Message:   "Where is my order?",
		EndUserId: "u-123",
	}) {
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, event)
	}
	want := []string{"run_started", "text_delta", "tool_call", "tool_result", "text_delta", "text_delta", "finish"}
	if got := kinds(events); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i, e := range events {
		if e.GetSeq() != uint64(i+1) || e.GetRunId() != events[0].GetRunId() {
			t.Fatalf("event %d: seq %d run %q", i, e.GetSeq(), e.GetRunId())
		}
	}
	started, call, result, finish := events[0].GetRunStarted(), events[2].GetToolCall(), events[3].GetToolResult(), events[6].GetFinish()
	if !strings.HasPrefix(started.GetSessionId(), "conv_") || started.GetProvider() != "fake" {
		t.Fatalf("run started: %v", started)
	}
	if call.GetName() != "search_conversations" || call.GetArgumentsJson() != `{"query": "order"}` {
		t.Fatalf("tool call: %v", call)
	}
	var found struct{ Results []any }
	if result.GetCallId() != call.GetCallId() || result.GetError() != "" ||
		json.Unmarshal([]byte(result.GetResultJson()), &found) != nil || found.Results == nil {
		t.Fatalf("tool result: %v", result)
	}
	if finish.GetStopReason() != interlockv1.StopReason_STOP_REASON_END_TURN ||
		finish.GetUsage().GetInputTokens() != 70 || finish.GetUsage().GetOutputTokens() != 7 ||
		finish.GetSessionId() != started.GetSessionId() {
		t.Fatalf("finish: %v", finish)
	}
}

// TestSecondTurnContinuesTheSession pins that a run with the first run's
// session id sees its history and lands in the same conversation.
func TestSecondTurnContinuesTheSession(t *testing.T) {
	client := newClient(t, live.APIKey)
	ctx := testContext(t)
	live.enqueue(t, []step{{"text", "First answer."}}, []step{{"text", "Second answer."}})
	first, err := client.RunText(ctx, &interlockv1.RunRequest{Message: "One", EndUserId: "u-2"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.RunText(ctx, &interlockv1.RunRequest{Message: "Two", EndUserId: "u-2", SessionId: first.SessionID})
	if err != nil {
		t.Fatal(err)
	}
	if second.SessionID != first.SessionID || second.Text() != "Second answer." {
		t.Fatalf("second turn: session %q text %q", second.SessionID, second.Text())
	}
	if roles := live.lastRoles(t); !slices.Equal(roles, []string{"user", "assistant", "user"}) {
		t.Fatalf("upstream saw roles %v", roles)
	}
	stored, err := client.Conversations.GetConversation(ctx, &interlockv1.GetConversationRequest{EndUserId: "u-2", SessionId: first.SessionID})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, e := range stored.GetEntries() {
		texts = append(texts, e.GetText())
	}
	if !slices.Equal(texts, []string{"One", "First answer.", "Two", "Second answer."}) {
		t.Fatalf("stored entries %q", texts)
	}
}

// TestWrongKeyIsUnauthenticated pins that a key the daemon does not know
// ends the iteration with an Unauthenticated status before any event.
func TestWrongKeyIsUnauthenticated(t *testing.T) {
	client := newClient(t, "ilk_wrong")
	var events int
	var failure error
	for _, err := range client.Run(testContext(t), &interlockv1.RunRequest{Message: "hi", EndUserId: "u-1"}) {
		if err != nil {
			failure = err
		} else {
			events++
		}
	}
	if events != 0 || status.Code(failure) != codes.Unauthenticated {
		t.Fatalf("%d events, error %v", events, failure)
	}
	if _, err := client.RunText(testContext(t), &interlockv1.RunRequest{Message: "hi", EndUserId: "u-1"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("RunText: %v", err)
	}
}

// TestMissingKeyFailsLocally pins that a call needing a key the client was
// not given fails with Unauthenticated without reaching the daemon.
func TestMissingKeyFailsLocally(t *testing.T) {
	client := newClient(t, "")
	_, err := client.RunText(testContext(t), &interlockv1.RunRequest{Message: "hi", EndUserId: "u-1"})
	var callErr *interlock.Error
	if !errors.As(err, &callErr) || callErr.Code != codes.Unauthenticated || !strings.Contains(err.Error(), "no sandbox API key") {
		t.Fatalf("run: %v", err)
	}
	_, err = client.Sandboxes.ListSandboxes(testContext(t), &interlockv1.ListSandboxesRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "WithOperatorKey") {
		t.Fatalf("sandboxes: %v", err)
	}
}

// TestBreakCancelsTheRun pins that leaving the loop early cancels the run on
// the router: its upstream call is abandoned and the run is recorded cancelled.
func TestBreakCancelsTheRun(t *testing.T) {
	client := newClient(t, live.APIKey)
	before := live.disconnects(t)
	live.enqueue(t, []step{{"text", "Thinking"}, {"stall"}})
	for event, err := range client.Run(testContext(t), &interlockv1.RunRequest{Message: "hi", EndUserId: "u-3", RequestId: "go-break"}) {
		if err != nil {
			t.Fatal(err)
		}
		if event.GetTextDelta() != nil {
			break
		}
	}
	if got := live.waitRun(t, "go-break"); got != "cancelled" {
		t.Fatalf("run status %q", got)
	}
	live.waitDisconnects(t, before+1)
}

// TestContextCancelStopsTheRun pins that cancelling the context mid-stream
// ends the iteration with an *Error, Canceled and errors.Is context.Canceled
// (told apart from a failure), and stops the run on the router.
func TestContextCancelStopsTheRun(t *testing.T) {
	client := newClient(t, live.APIKey)
	before := live.disconnects(t)
	live.enqueue(t, []step{{"text", "Thinking"}, {"stall"}})
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	var failure error
	for event, err := range client.Run(ctx, &interlockv1.RunRequest{Message: "hi", EndUserId: "u-4", RequestId: "go-cancel"}) {
		if err != nil {
			failure = err
			break
		}
		if event.GetTextDelta() != nil {
			cancel()
		}
	}
	var callErr *interlock.Error
	if !errors.As(failure, &callErr) || callErr.Code != codes.Canceled || !errors.Is(failure, context.Canceled) ||
		callErr.Retryable || status.Code(failure) != codes.Canceled {
		t.Fatalf("error %#v, want a Canceled *interlock.Error", failure)
	}
	if got := live.waitRun(t, "go-cancel"); got != "cancelled" {
		t.Fatalf("run status %q", got)
	}
	live.waitDisconnects(t, before+1)
}

// TestDeadlineStopsTheRun pins that a context deadline is the call's
// deadline: the run ends with a DeadlineExceeded *Error (errors.Is
// context.DeadlineExceeded) and stops on the router too.
func TestDeadlineStopsTheRun(t *testing.T) {
	client := newClient(t, live.APIKey)
	before := live.disconnects(t)
	live.enqueue(t, []step{{"text", "Thinking"}, {"stall"}})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	outcome, err := client.RunText(ctx, &interlockv1.RunRequest{Message: "hi", EndUserId: "u-5", RequestId: "go-deadline"})
	var callErr *interlock.Error
	if !errors.As(err, &callErr) || callErr.Code != codes.DeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || outcome.Text() != "Thinking" {
		t.Fatalf("error %#v, text %q", err, outcome.Text())
	}
	if got := live.waitRun(t, "go-deadline"); got != "cancelled" {
		t.Fatalf("run status %q", got)
	}
	live.waitDisconnects(t, before+1)
}

// TestErrorEventIsARunError pins that a run failing after it started ends
// with an error event, which RunText reports as a *RunError status.
func TestErrorEventIsARunError(t *testing.T) {
	client := newClient(t, live.APIKey)
	live.enqueue(t, []step{{"text", "Partial"}, {"disconnect"}})
	outcome, err := client.RunText(testContext(t), &interlockv1.RunRequest{Message: "hi", EndUserId: "u-6"})
	var runErr *interlock.RunError
	if !errors.As(err, &runErr) || outcome.Error == nil || outcome.Text() != "Partial" {
		t.Fatalf("error %v, outcome %+v", err, outcome)
	}
	if status.Code(err) != codes.Unavailable || runErr.Code != codes.Unavailable || runErr.Provider != "fake" {
		t.Fatalf("run error %+v", runErr)
	}
}
