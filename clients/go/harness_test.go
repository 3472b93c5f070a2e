package interlock_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// live is the daemon every test of the package talks to (see TestMain).
var live *harness

// TestMain starts one live daemon for the package's tests and examples; the
// examples find it through INTERLOCK_ADDRESS, INTERLOCK_API_KEY and
// INTERLOCK_OPERATOR_KEY, as make serve's banner exports them.
func TestMain(m *testing.M) {
	h, err := startHarness()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	live = h
	os.Setenv("INTERLOCK_ADDRESS", h.Address)
	os.Setenv("INTERLOCK_API_KEY", h.APIKey)
	os.Setenv("INTERLOCK_OPERATOR_KEY", h.OperatorKey)
	// The examples' provider: make serve's is "local", the harness's "fake".
	os.Setenv("INTERLOCK_PROVIDER", h.Provider)
	code := m.Run()
	h.stop()
	os.Exit(code)
}

// harness is clients/testing/live_daemon.py run as a subprocess: a real
// interlockd in front of the scripted OpenAI-compatible fake, its github app
// pointed at the GitHub fake. Commands to script and observe them, and to
// play the end user's browser in a connect flow, go over its stdin, one JSON
// line each.
type harness struct {
	Address     string `json:"address"`
	APIKey      string `json:"api_key"`
	OperatorKey string `json:"operator_key"`
	SandboxID   string `json:"sandbox_id"`
	// Provider is the name the daemon's one provider is configured under.
	Provider string `json:"provider"`
	// GitHubURL is the GitHub fake's address (its web and API side).
	GitHubURL string `json:"github_url"`

	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
	mu    sync.Mutex
}

// step is one step of a scripted upstream reply: a Reply builder method
// name and its arguments, e.g. step{"text", "Hello"}.
type step []any

func startHarness() (*harness, error) {
	python := os.Getenv("INTERLOCK_PYTHON")
	if python == "" {
		python = filepath.Join("..", "..", ".venv", "bin", "python")
	}
	cmd := exec.Command(python, filepath.Join("..", "testing", "live_daemon.py"))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the live daemon harness with %s: %w", python, err)
	}
	h := &harness{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	h.lines.Buffer(make([]byte, 1<<20), 16<<20)
	if !h.lines.Scan() {
		_ = cmd.Wait()
		return nil, errors.New("the live daemon harness exited before it was ready")
	}
	if err := json.Unmarshal(h.lines.Bytes(), h); err != nil {
		return nil, err
	}
	return h, nil
}

// command sends one command and decodes its answer into answer (if not nil).
func (h *harness) command(t testing.TB, command map[string]any, answer any) {
	t.Helper()
	if err := h.do(command, answer); err != nil {
		t.Fatal(err)
	}
}

// do is command for callers without a testing.TB (examples).
func (h *harness) do(command map[string]any, answer any) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	line, err := json.Marshal(command)
	if err != nil {
		return err
	}
	if _, err := h.stdin.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if !h.lines.Scan() {
		return errors.New("the live daemon harness exited")
	}
	var status struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(h.lines.Bytes(), &status); err != nil {
		return err
	}
	if !status.OK {
		return fmt.Errorf("harness: %s", status.Error)
	}
	if answer != nil {
		return json.Unmarshal(h.lines.Bytes(), answer)
	}
	return nil
}

// authorize plays the end user's browser: op "approve" grants access at the
// GitHub fake on authorizeURL (from Connect), "deny" declines, then it
// follows the redirect to the daemon's callback. The callback page's HTTP
// status, once the daemon has handled it.
func (h *harness) authorize(op, authorizeURL string) (int, error) {
	var page struct{ Status int }
	err := h.do(map[string]any{"op": op, "authorize_url": authorizeURL}, &page)
	return page.Status, err
}

// approve is authorize("approve", ...) in a test.
func (h *harness) approve(t testing.TB, authorizeURL string) int {
	t.Helper()
	code, err := h.authorize("approve", authorizeURL)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// deny is authorize("deny", ...) in a test.
func (h *harness) deny(t testing.TB, authorizeURL string) int {
	t.Helper()
	code, err := h.authorize("deny", authorizeURL)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// enqueue scripts the upstream's next answers, one list of steps per call.
func (h *harness) enqueue(t testing.TB, replies ...[]step) {
	t.Helper()
	h.command(t, map[string]any{"op": "enqueue", "replies": replies}, nil)
}

// disconnects is how many upstream calls the daemon abandoned mid-answer so far.
func (h *harness) disconnects(t testing.TB) int {
	t.Helper()
	var stats struct{ Disconnects int }
	h.command(t, map[string]any{"op": "stats"}, &stats)
	return stats.Disconnects
}

// waitDisconnects returns once count upstream calls were abandoned mid-answer.
func (h *harness) waitDisconnects(t testing.TB, count int) {
	t.Helper()
	h.command(t, map[string]any{"op": "wait_disconnects", "count": count}, nil)
}

// waitRun waits until the run started with requestID has ended; its stored status.
func (h *harness) waitRun(t testing.TB, requestID string) string {
	t.Helper()
	var run struct{ Status string }
	h.command(t, map[string]any{"op": "wait_run", "request_id": requestID}, &run)
	return run.Status
}

// lastRoles are the message roles of the last request the upstream received.
func (h *harness) lastRoles(t testing.TB) []string {
	t.Helper()
	var got struct {
		Requests []struct {
			Messages []struct{ Role string }
		}
	}
	h.command(t, map[string]any{"op": "requests"}, &got)
	if len(got.Requests) == 0 {
		t.Fatal("the upstream received no request")
	}
	var roles []string
	for _, m := range got.Requests[len(got.Requests)-1].Messages {
		roles = append(roles, m.Role)
	}
	return roles
}

// stopDaemon stops the daemon as a shutdown past its grace does: runs in
// flight end with a retryable UNAVAILABLE error event.
func (h *harness) stopDaemon(t testing.TB) {
	t.Helper()
	h.command(t, map[string]any{"op": "stop"}, nil)
}

// startDaemon starts the stopped daemon again on its data directory and
// address.
func (h *harness) startDaemon(t testing.TB) {
	t.Helper()
	h.command(t, map[string]any{"op": "start"}, nil)
}

// stop closes the harness's stdin, which stops the daemon and the fake.
func (h *harness) stop() {
	_ = h.stdin.Close()
	_ = h.cmd.Wait()
}
