package interlock

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/interlock/interlock/clients/go/interlockv1"
)

// Outcome is everything a run said, folded event by event with Add: the
// answer's text, the conversation it belongs to, its tool calls and results,
// and its last event (Finish or Error).
type Outcome struct {
	RunID     string
	SessionID string
	Provider  string
	Model     string
	RequestID string
	// Replayed is true when the router replayed a recorded run (same RequestId).
	Replayed    bool
	ToolCalls   []*interlockv1.ToolCall
	ToolResults []*interlockv1.ToolResult
	// Finish is set when the run ended normally.
	Finish *interlockv1.Finish
	// Error is set when the run ended with a failure after it had started.
	Error *interlockv1.Error

	text     strings.Builder
	thinking strings.Builder
}

// Text is the assistant's answer: every text delta of the run, concatenated.
func (o *Outcome) Text() string { return o.text.String() }

// Thinking is the model's reasoning, when the provider exposed it.
func (o *Outcome) Thinking() string { return o.thinking.String() }

// Add folds one event into the outcome. Event kinds added to the API after
// this client was built are ignored.
func (o *Outcome) Add(event *interlockv1.AgentEvent) {
	if event.GetRunId() != "" {
		o.RunID = event.GetRunId()
	}
	switch e := event.GetEvent().(type) {
	case *interlockv1.AgentEvent_RunStarted:
		s := e.RunStarted
		o.SessionID, o.Provider, o.Model = s.GetSessionId(), s.GetProvider(), s.GetModel()
		o.RequestID, o.Replayed = s.GetRequestId(), s.GetReplayed()
	case *interlockv1.AgentEvent_TextDelta:
		o.text.WriteString(e.TextDelta.GetText())
	case *interlockv1.AgentEvent_ThinkingDelta:
		o.thinking.WriteString(e.ThinkingDelta.GetText())
	case *interlockv1.AgentEvent_ToolCall:
		o.ToolCalls = append(o.ToolCalls, e.ToolCall)
	case *interlockv1.AgentEvent_ToolResult:
		o.ToolResults = append(o.ToolResults, e.ToolResult)
	case *interlockv1.AgentEvent_Finish:
		o.Finish = e.Finish
		if o.SessionID == "" {
			o.SessionID = e.Finish.GetSessionId()
		}
	case *interlockv1.AgentEvent_Error:
		o.Error = e.Error
	}
}

// Err is nil when the run finished normally, a *RunError when it ended with
// an error event, and a *RunError with codes.Unknown when the stream ended
// without either (which the router never does on purpose).
func (o *Outcome) Err() error {
	if e := o.Error; e != nil {
		return &RunError{
			Code:      codeNamed(e.GetCode()),
			Message:   e.GetMessage(),
			Retryable: e.GetRetryable(),
			Provider:  e.GetProvider(),
		}
	}
	if o.Finish == nil {
		return &RunError{Code: codes.Unknown, Message: "the stream ended without a finish or error event"}
	}
	return nil
}

// RunError is a run that had started streaming and then ended with an error
// event. It is a gRPC status error too: status.Code(err) is Code.
//
// It is not the status of the call, which ended OK: the run recorded part of
// the turn in the conversation before it failed, so running it again means
// something different than retrying a call the router refused up front.
type RunError struct {
	// Code is the status the router named in the event (codes.Unknown for a
	// name this client does not know).
	Code    codes.Code
	Message string
	// Retryable is true when running the same turn again may succeed.
	Retryable bool
	// Provider is the provider at fault, when there is one.
	Provider string
}

func (e *RunError) Error() string {
	return fmt.Sprintf("run failed: %s: %s", codeName(e.Code), e.Message)
}

// GRPCStatus makes status.Code, status.FromError and status.Convert see the
// router's code.
func (e *RunError) GRPCStatus() *status.Status {
	return status.New(e.Code, e.Message)
}

// codeNames are the canonical status code names, as the router spells them
// in error events (codes.Code's String() spells them in CamelCase).
var codeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// codeNamed is the status code called name ("UNAVAILABLE"), or codes.Unknown:
// a name added after this client was built must not become a crash.
func codeNamed(name string) codes.Code {
	for c, n := range codeNames {
		if n == name {
			return codes.Code(c)
		}
	}
	return codes.Unknown
}

// codeName is the code's canonical name ("UNAVAILABLE").
func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return c.String()
}
