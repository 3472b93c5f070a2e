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
// once as a non-nil error (a gRPC status error: status.Code(err)) and ends
// the iteration. A failure after the run has started arrives as its last
// event (GetError() != nil), not as an error.
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
// The error is nil only when the run finished normally. It is the call's
// status error when the router refused the run or the call failed, and a
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
