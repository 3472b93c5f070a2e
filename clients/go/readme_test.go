package interlock_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

// checkoutPlaceholder is where README.md's install steps say the checkout is.
const checkoutPlaceholder = "/path/to/interlock"

// readmeBlocks returns the contents of README.md's fenced blocks of a language.
func readmeBlocks(t *testing.T, lang string) []string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllSubmatch(readme, -1) {
		blocks = append(blocks, string(m[1]))
	}
	if len(blocks) == 0 {
		t.Fatalf("README.md has no %s block", lang)
	}
	return blocks
}

// TestReadmeQuickstartIsTheExample pins that README.md's first Go block is
// examples/quickstart/main.go as it is, so the README shows the program the
// suite runs.
func TestReadmeQuickstartIsTheExample(t *testing.T) {
	source, err := os.ReadFile(filepath.Join("examples", "quickstart", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if first := readmeBlocks(t, "go")[0]; first != string(source) {
		t.Fatalf("README.md's first Go block is not examples/quickstart/main.go:\n%s", first)
	}
}

// TestReadmeInstallStepsRunTheQuickstart pins that README.md's install steps,
// run as written in an empty directory outside this module (only the
// checkout's path filled in), build a module of their own that depends on
// this one through replace and runs the quickstart against a live daemon:
// the first turn streamed, the second in the same conversation.
func TestReadmeInstallStepsRunTheQuickstart(t *testing.T) {
	checkout, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	steps := readmeBlocks(t, "sh")[0]
	if !strings.Contains(steps, "go run .") || !strings.Contains(steps, checkoutPlaceholder) {
		t.Fatalf("README.md's first sh block is not the install steps:\n%s", steps)
	}
	live.enqueue(t, []step{{"text", "It shipped ", "yesterday."}}, []step{{"text", "You're welcome."}})

	// Building the new module can take a while on a cold build cache.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", strings.ReplaceAll(steps, checkoutPlaceholder, checkout))
	cmd.Dir = t.TempDir()
	// TestMain exported INTERLOCK_ADDRESS and INTERLOCK_API_KEY, as make serve's banner says to.
	cmd.Env = os.Environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the install steps failed: %v\n%s", err, stderr.String())
	}
	if got, want := stdout.String(), "It shipped yesterday.\nYou're welcome.\n"; got != want {
		t.Fatalf("the quickstart printed %q, want %q (stderr: %s)", got, want, stderr.String())
	}
	// The second turn (no system prompt) carried the first one's history.
	if roles := live.lastRoles(t); !slices.Equal(roles, []string{"user", "assistant", "user"}) {
		t.Fatalf("the second turn's upstream call had roles %v", roles)
	}
}

// TestReadmeWalksEveryService pins that README.md's Go blocks call every
// service's stub on Client (client.Agents.PutAgent, …), the router's through
// Run or RunText, so a service added to the API needs its README example.
func TestReadmeWalksEveryService(t *testing.T) {
	code := strings.Join(readmeBlocks(t, "go"), "\n")
	client := reflect.TypeFor[interlock.Client]()
	for i := range client.NumField() {
		field := client.Field(i)
		if !field.IsExported() || !strings.HasSuffix(field.Type.Name(), "Client") {
			continue
		}
		used := strings.Contains(code, "."+field.Name+".")
		if field.Type == reflect.TypeFor[interlockv1.AgentRouterClient]() {
			used = strings.Contains(code, ".Run(") || strings.Contains(code, ".RunText(")
		}
		if !used {
			t.Errorf("no Go block of README.md uses client.%s", field.Name)
		}
	}
}
