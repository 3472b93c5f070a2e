// Package interlock is a Go client for the Interlock agent router.
//
// The generated messages and gRPC stubs of the interlock.v1 API are in the
// interlockv1 package; this package adds what every caller would otherwise
// write: the right key on every call (the sandbox API key for runs,
// conversations and integrations, the operator key for sandboxes), runs as a
// range-over-func iterator that cancels the call when the loop is left, a
// RunText helper that folds a run into its answer, and WaitConnected, which
// follows an integration's connect flow to its end.
//
//	client, err := interlock.NewClient("127.0.0.1:7600", apiKey)
//	if err != nil { ... }
//	defer client.Close()
//	for event, err := range client.Run(ctx, &interlockv1.RunRequest{Message: "Hi", EndUserId: "u-1"}) {
//		if err != nil { ... } // a gRPC status: status.Code(err) == codes.Unauthenticated, ...
//		if d := event.GetTextDelta(); d != nil {
//			fmt.Print(d.Text)
//		}
//	}
//
// Errors are gRPC status errors throughout (inspect them with status.Code
// and status.FromError), including a run that ended with an in-band error
// event, which RunText reports as a *RunError carrying the router's code, and
// a connect flow that failed or expired, which WaitConnected reports as a
// *ConnectError.
package interlock
