package interlock_test

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
