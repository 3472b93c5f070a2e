package interlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"regexp"
	"strings"
	"testing"
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

// sendToUser stands for sending the end user's browser to a URL (a redirect
// in your web app's answer). Here the harness plays an end user who approves
// at GitHub.
var sendToUser = func(url string) {
	if _, err := live.authorize("approve", url); err != nil {
		log.Fatal(err)
	}
}

// Connect GitHub for an end user: their runs are offered GitHub's tools from
// then on, whichever provider runs them.
func ExampleClient_WaitConnected() {
	client, err := interlock.NewClient(os.Getenv("INTERLOCK_ADDRESS"), os.Getenv("INTERLOCK_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	started, err := client.Integrations.Connect(ctx, &interlockv1.ConnectRequest{App: "github", EndUserId: "u-42"})
	if status.Code(err) == codes.InvalidArgument {
		log.Fatal("the daemon does not configure github: ", err)
	} else if err != nil {
		log.Fatal(err)
	}
	sendToUser(started.AuthorizeUrl)
	integration, err := client.WaitConnected(ctx, started.FlowId)
	var failed *interlock.ConnectError
	if errors.As(err, &failed) {
		log.Fatalf("not connected (%s): %s", failed.State, failed.Reason)
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected", integration.App, "as", integration.Account)
	// Output: connected github as octocat
}

// TestReadmeExamplesAreTheExamples pins that every Go block of README.md
// after the quickstart (see TestReadmeQuickstartIsTheExample) is the body of
// an example of this file, as written, so that the README shows code the
// suite runs.
func TestReadmeExamplesAreTheExamples(t *testing.T) {
	source, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, "go")
	if len(blocks) < 2 {
		t.Fatalf("README.md has %d Go blocks, want the quickstart and an example", len(blocks))
	}
	for _, block := range blocks[1:] {
		// The block de-indented by one tab: indent it back, blank lines stay empty.
		indented := regexp.MustCompile("(?m)^(.)").ReplaceAllString(block, "\t$1")
		if !strings.Contains(string(source), "{\n"+indented) {
			t.Errorf("this README block is no example's body:\n%s", block)
		}
	}
}
