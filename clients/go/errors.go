package interlock

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// detailsDomain is the ErrorInfo domain of the router's own statuses.
const detailsDomain = "interlock.dev"

// Error is a call the router refused or that failed on the way: every
// status a call through this client returns (the stubs of Client, the
// connections of Conn and OperatorConn, Run, RunText, WaitConnected) is an
// *Error. It is a gRPC status error too: status.Code(err) is Code and
// status.FromError(err) gives the status as received, details included.
//
// A cancelled context ends a call with Code codes.Canceled and an expired
// one with codes.DeadlineExceeded; errors.Is(err, context.Canceled) and
// errors.Is(err, context.DeadlineExceeded) are true for them, so a caller
// tells "I stopped it" apart from a failure. A connection lost mid-call (the
// daemon restarted or went away) is codes.Unavailable with Retryable true.
type Error struct {
	Code    codes.Code
	Message string
	// Reason is the router's stable name of the error (ErrorInfo.reason),
	// e.g. "INVALID_ARGUMENT", "NOT_FOUND", "PROVIDER_UNAVAILABLE"; branch on
	// it rather than on Message. Empty when the status did not come from the
	// router (a connection that failed, a deadline that passed locally).
	Reason string
	// Metadata are the error's facts (ErrorInfo.metadata), e.g. "field" or
	// "provider"; nil when there are none.
	Metadata map[string]string
	// FieldViolations name the request fields at fault, for codes.InvalidArgument.
	FieldViolations []FieldViolation
	// Retryable is true when sending the same request again may succeed: the
	// router said so (RetryInfo), or the connection failed before the router
	// could answer (codes.Unavailable without the router's details). A Run
	// retried with the same RequestId resumes or replays the run instead of
	// starting a second one.
	Retryable bool
	// RetryDelay is how long the router suggests waiting before a retry
	// (RetryInfo.retry_delay); zero when it suggested nothing.
	RetryDelay time.Duration

	status *status.Status
}

// FieldViolation is one request field at fault (google.rpc.BadRequest).
type FieldViolation struct {
	// Field is the field's path as the proto spells it: "end_user_id",
	// "compute.policy" (the Go field EndUserId, Compute.Policy).
	Field string
	// Description says what is wrong with it.
	Description string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", codeName(e.Code), e.Message)
}

// GRPCStatus makes status.Code, status.FromError and status.Convert see the
// status as the router sent it, details included.
func (e *Error) GRPCStatus() *status.Status {
	if e.status == nil {
		return status.New(e.Code, e.Message)
	}
	return e.status
}

// Is makes errors.Is(err, context.Canceled) true for a cancelled call and
// errors.Is(err, context.DeadlineExceeded) for one whose deadline passed.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == codes.Canceled
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	}
	return false
}

// asError is err as an *Error: a gRPC status error (from the router or the
// transport) with its details read, and anything else unchanged (io.EOF, nil).
func asError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*Error); ok {
		return err
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	return fromStatus(s)
}

// fromStatus reads the router's details (ErrorInfo, BadRequest, RetryInfo)
// off s. Details of other kinds, or from another domain, are left in the
// status for GRPCStatus.
func fromStatus(s *status.Status) *Error {
	e := &Error{Code: s.Code(), Message: s.Message(), status: s}
	fromRouter := false
	for _, detail := range s.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() == detailsDomain {
				fromRouter = true
				e.Reason = d.GetReason()
				if len(d.GetMetadata()) > 0 {
					e.Metadata = d.GetMetadata()
				}
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			e.Retryable = true
			e.RetryDelay = d.GetRetryDelay().AsDuration()
		}
	}
	// Without the router's word, an Unavailable is the connection: the
	// daemon restarting, or the network between.
	if !fromRouter && e.Code == codes.Unavailable {
		e.Retryable = true
	}
	return e
}

// localError is a call refused before anything was sent.
func localError(code codes.Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
