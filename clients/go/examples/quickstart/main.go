// Command quickstart streams one turn, then continues the conversation.
//
//	INTERLOCK_API_KEY=ilk_... go run ./examples/quickstart
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens;
// the turn runs on the daemon's default provider and model.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

func main() {
	address := os.Getenv("INTERLOCK_ADDRESS")
	if address == "" {
		address = "127.0.0.1:7600"
	}
	client, err := interlock.NewClient(address, os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sessionID := ""
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
		case *interlockv1.AgentEvent_RunStarted:
			sessionID = e.RunStarted.SessionId
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

	// The same conversation: SessionId from the first turn's RunStarted.
	next, err := client.RunText(ctx, &interlockv1.RunRequest{
		Message:   "Thanks!",
		EndUserId: "u-123",
		SessionId: sessionID,
	})
	if err != nil {
		log.Fatal(err) // a *interlock.RunError when the run ended with an error event
	}
	fmt.Println(next.Text())
}
