package interlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/interlock/interlock/clients/go/interlockv1"
)

// WaitConnected follows the connect flow flowID (from Integrations.Connect)
// until it ends and returns the new integration.
//
// A flow that failed (the end user declined, the provider refused the grant)
// or expired returns a *ConnectError. Other errors are the call's *Error:
// codes.NotFound for a flow of another sandbox, or none. A deadline
// on ctx bounds the wait, not the flow: codes.DeadlineExceeded leaves the
// flow open until it expires, and waiting again picks it up.
func (c *Client) WaitConnected(ctx context.Context, flowID string) (*interlockv1.Integration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Integrations.WatchConnect(ctx, &interlockv1.WatchConnectRequest{FlowId: flowID})
	if err != nil {
		return nil, err
	}
	for {
		update, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			ended := localError(codes.Unavailable, "the watch of connect flow %s ended before the flow did; wait again", flowID)
			ended.Retryable = true
			return nil, ended
		}
		if err != nil {
			return nil, err
		}
		switch update.GetState() {
		case interlockv1.ConnectState_CONNECT_STATE_CONNECTED:
			if update.GetIntegration() == nil {
				return nil, localError(codes.Internal, "connect flow %s is connected but the router sent no integration", flowID)
			}
			return update.GetIntegration(), nil
		case interlockv1.ConnectState_CONNECT_STATE_FAILED, interlockv1.ConnectState_CONNECT_STATE_EXPIRED:
			return nil, &ConnectError{FlowID: update.GetFlowId(), State: update.GetState(), Reason: update.GetReason()}
		}
		// Pending, or a state added to the API after this client was built.
	}
}

// ConnectError is a connect flow that ended without a connection. It is a
// gRPC status error too: status.Code(err) is codes.FailedPrecondition, since
// the flow is over and only a new Connect can succeed.
//
// It is not a call the router refused: the flow was accepted, then the end
// user declined, the provider refused or time ran out.
type ConnectError struct {
	FlowID string
	// State is CONNECT_STATE_FAILED (the end user declined, or the provider
	// refused the grant) or CONNECT_STATE_EXPIRED (the end user did not
	// finish in time).
	State interlockv1.ConnectState
	// Reason is the router's one-line explanation.
	Reason string
}

func (e *ConnectError) Error() string {
	state := strings.ToLower(strings.TrimPrefix(e.State.String(), "CONNECT_STATE_"))
	if e.Reason == "" {
		return fmt.Sprintf("connect flow %s %s", e.FlowID, state)
	}
	return fmt.Sprintf("connect flow %s %s: %s", e.FlowID, state, e.Reason)
}

// GRPCStatus makes status.Code, status.FromError and status.Convert see
// codes.FailedPrecondition.
func (e *ConnectError) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.Error())
}
