package interlock

import (
	"context"
	"errors"
	"io"
	"iter"

	"github.com/interlock/interlock/clients/go/interlockv1"
)

// Run runs one agent turn and yields its events as they arrive.
//
// The call starts when the loop does. Leaving the loop early (break, return,
// a panic) cancels the run on the router, and so does cancelling ctx; a
// deadline on ctx travels to the router as the call's deadline. A status the
// router returns before the first event, or a transport failure, is yielded
// once as a non-nil *Error and ends the iteration. A failure after the run
// has started arrives as its last event (GetError() != nil), not as an error.
//
// Cancelling ctx ends the iteration with an *Error whose Code is
// codes.Canceled (errors.Is(err, context.Canceled) is true), a deadline with
// codes.DeadlineExceeded; a connection lost mid-stream (the daemon restarted)
// with codes.Unavailable and Retryable set, and a daemon shutting down sends
// an error event with code "UNAVAILABLE" and Retryable set before the stream
// ends. Either way, running the same request again with the same RequestId
// resumes the run where the record left it (its recorded events are sent
// again, then the rest) instead of running the turn twice; a run that had
// ended is replayed.
func (c *Client) Run(ctx context.Context, req *interlockv1.RunRequest) iter.Seq2[*interlockv1.AgentEvent, error] {
	return func(yield func(*interlockv1.AgentEvent, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.Router.Run(ctx, req)
		if err != nil {
			yield(nil, err)
			return
		}
		for {
			event, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(event, nil) {
				return
			}
		}
	}
}

// RunText runs one turn to its end and returns what it said.
//
// The error is nil only when the run finished normally. It is an *Error
// when the router refused the run or the call failed, and a
// *RunError when the run ended with an error event; the outcome holds what
// the run said before it ended either way.
func (c *Client) RunText(ctx context.Context, req *interlockv1.RunRequest) (*Outcome, error) {
	outcome := &Outcome{}
	for event, err := range c.Run(ctx, req) {
		if err != nil {
			return outcome, err
		}
		outcome.Add(event)
	}
	return outcome, outcome.Err()
}
