// Package interlock is a Go client for the Interlock agent router.
//
// The generated messages and gRPC stubs of the interlock.v1 API are in the
// interlockv1 package; this package adds what every caller would otherwise
// write: a stub for every service with the right key on every call (the
// sandbox API key for runs, conversations, integrations, agents, the ledger
// and compute sessions, the operator key for sandboxes and pauses), runs as a
// range-over-func iterator that cancels the call when the loop is left, a
// RunText helper that folds a run into its answer, and WaitConnected, which
// follows an integration's connect flow to its end.
//
//	client, err := interlock.NewClient("127.0.0.1:7600", apiKey)
//	if err != nil { ... }
//	defer client.Close()
//	for event, err := range client.Run(ctx, &interlockv1.RunRequest{Message: "Hi", EndUserId: "u-1"}) {
//		if err != nil { ... } // an *interlock.Error: status.Code(err) == codes.Unauthenticated, ...
//		if d := event.GetTextDelta(); d != nil {
//			fmt.Print(d.Text)
//		}
//	}
//
// Every status a call returns is an *Error (a gRPC status error too:
// status.Code(err)) carrying the router's details: Reason, Metadata,
// FieldViolations naming the request fields at fault, Retryable and
// RetryDelay. A cancelled context is codes.Canceled with errors.Is(err,
// context.Canceled) true; a connection lost mid-stream is codes.Unavailable
// and retryable, and a Run retried with the same RequestId resumes the run.
// A run that ended with an in-band error event is a *RunError from RunText,
// and a connect flow that failed or expired a *ConnectError from
// WaitConnected.
package interlock
