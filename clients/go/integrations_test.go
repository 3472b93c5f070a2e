package interlock_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

// mcpURL is stored, never called: no test runs a turn in the sandboxes that have it.
const mcpURL = "http://127.0.0.1:9/mcp"

// sandboxClient is a client of a new sandbox of its own, so that tests do not
// see each other's integrations.
func sandboxClient(t *testing.T, name string) *interlock.Client {
	t.Helper()
	ctx := testContext(t)
	operator := newClient(t, "", interlock.WithOperatorKey(live.OperatorKey))
	created, err := operator.Sandboxes.CreateSandbox(ctx, &interlockv1.CreateSandboxRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	key, err := operator.Sandboxes.CreateApiKey(ctx, &interlockv1.CreateApiKeyRequest{SandboxId: created.GetSandbox().GetSandboxId(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, key.GetSecret())
}

func listIDs(t *testing.T, client *interlock.Client, req *interlockv1.ListIntegrationsRequest) []string {
	t.Helper()
	listed, err := client.Integrations.ListIntegrations(testContext(t), req)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, i := range listed.GetIntegrations() {
		ids = append(ids, i.GetIntegrationId())
	}
	return ids
}

func addMcpServer(t *testing.T, client *interlock.Client, req *interlockv1.AddMcpServerRequest) *interlockv1.Integration {
	t.Helper()
	added, err := client.Integrations.AddMcpServer(testContext(t), req)
	if err != nil {
		t.Fatal(err)
	}
	return added.GetIntegration()
}

// TestMcpServerRoundTrip pins that an added MCP server is listed for its end
// user without its secrets, and disconnects into the archive, twice without error.
func TestMcpServerRoundTrip(t *testing.T) {
	ctx := testContext(t)
	client := sandboxClient(t, "go-mcp-round-trip")
	token := "mcp-token-" + strings.Repeat("7f3a9c", 6)
	added := addMcpServer(t, client, &interlockv1.AddMcpServerRequest{
		Name: "docs", Url: mcpURL, EndUserId: "u-1", BearerToken: token, Headers: map[string]string{"X-Team": "core"},
	})
	if !strings.HasPrefix(added.GetIntegrationId(), "int_") || added.GetKind() != interlockv1.IntegrationKind_INTEGRATION_KIND_MCP ||
		added.GetApp() != "docs" || added.GetEndUserId() != "u-1" || added.GetAccount() != mcpURL ||
		added.GetStatus() != interlockv1.IntegrationStatus_INTEGRATION_STATUS_ACTIVE {
		t.Fatalf("added: %v", added)
	}
	if strings.Contains(protojson.Format(added), token) {
		t.Fatal("the integration carries its bearer token")
	}
	if got := listIDs(t, client, &interlockv1.ListIntegrationsRequest{EndUserId: "u-1"}); !slices.Equal(got, []string{added.GetIntegrationId()}) {
		t.Fatalf("listed: %v", got)
	}

	for range 2 {
		gone, err := client.Integrations.Disconnect(ctx, &interlockv1.DisconnectRequest{IntegrationId: added.GetIntegrationId()})
		if err != nil || gone.GetIntegration().GetStatus() != interlockv1.IntegrationStatus_INTEGRATION_STATUS_DISCONNECTED || gone.GetIntegration().GetStatusReason() == "" {
			t.Fatalf("disconnect: %v, %v", err, gone)
		}
	}
	if got := listIDs(t, client, &interlockv1.ListIntegrationsRequest{EndUserId: "u-1"}); len(got) != 0 {
		t.Fatalf("listed after disconnect: %v", got)
	}
	archived := listIDs(t, client, &interlockv1.ListIntegrationsRequest{EndUserId: "u-1", IncludeDisconnected: true})
	if !slices.Equal(archived, []string{added.GetIntegrationId()}) {
		t.Fatalf("archive: %v", archived)
	}
}

// TestIntegrationEndUserScoping pins that an end user's integration is theirs
// alone, a sandbox-wide one everyone's, and another sandbox's nobody's.
func TestIntegrationEndUserScoping(t *testing.T) {
	client := sandboxClient(t, "go-mcp-scoping")
	shared := addMcpServer(t, client, &interlockv1.AddMcpServerRequest{Name: "shared", Url: mcpURL}).GetIntegrationId()
	mine := addMcpServer(t, client, &interlockv1.AddMcpServerRequest{Name: "mine", Url: mcpURL, EndUserId: "u-1"}).GetIntegrationId()
	for _, c := range []struct {
		endUser string
		want    []string
	}{{"u-1", []string{shared, mine}}, {"u-2", []string{shared}}, {"", []string{shared, mine}}} {
		if got := listIDs(t, client, &interlockv1.ListIntegrationsRequest{EndUserId: c.endUser}); !slices.Equal(got, c.want) {
			t.Errorf("end user %q sees %v, want %v", c.endUser, got, c.want)
		}
	}

	other := sandboxClient(t, "go-mcp-scoping-other")
	if got := listIDs(t, other, &interlockv1.ListIntegrationsRequest{}); len(got) != 0 {
		t.Errorf("another sandbox sees %v", got)
	}
	_, err := other.Integrations.Disconnect(testContext(t), &interlockv1.DisconnectRequest{IntegrationId: mine})
	if status.Code(err) != codes.NotFound {
		t.Errorf("another sandbox disconnecting: %v", err)
	}
}

// TestConnectUnconfiguredAppIsInvalidArgument pins that connecting an app the
// daemon does not configure is InvalidArgument naming the field.
func TestConnectUnconfiguredAppIsInvalidArgument(t *testing.T) {
	client := sandboxClient(t, "go-connect-unknown")
	_, err := client.Integrations.Connect(testContext(t), &interlockv1.ConnectRequest{App: "gitlab", EndUserId: "u-1"})
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "app: ") {
		t.Fatalf("connect gitlab: %v", err)
	}
}

// TestWatchUnknownFlowIsNotFound pins that watching, or waiting on, a flow
// that does not exist is NotFound.
func TestWatchUnknownFlowIsNotFound(t *testing.T) {
	ctx := testContext(t)
	client := sandboxClient(t, "go-watch-unknown")
	stream, err := client.Integrations.WatchConnect(ctx, &interlockv1.WatchConnectRequest{FlowId: "flow_doesnotexist"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("watch: %v", err)
	}
	if _, err := client.WaitConnected(ctx, "flow_doesnotexist"); status.Code(err) != codes.NotFound {
		t.Fatalf("wait: %v", err)
	}
}

// waitConnected runs client.WaitConnected in the background, so that the test
// can play the end user meanwhile.
func waitConnected(ctx context.Context, client *interlock.Client, flowID string) func() (*interlockv1.Integration, error) {
	type result struct {
		integration *interlockv1.Integration
		err         error
	}
	done := make(chan result, 1)
	go func() {
		integration, err := client.WaitConnected(ctx, flowID)
		done <- result{integration, err}
	}()
	return func() (*interlockv1.Integration, error) {
		r := <-done
		return r.integration, r.err
	}
}

// TestConnectGitHub pins the whole flow: Connect returns GitHub's authorize
// URL, the end user approves there, the daemon's callback connects, and
// WaitConnected returns the integration, which is the end user's alone.
func TestConnectGitHub(t *testing.T) {
	ctx := testContext(t)
	client := sandboxClient(t, "go-connect-github")
	started, err := client.Integrations.Connect(ctx, &interlockv1.ConnectRequest{App: "github", EndUserId: "u-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(started.GetAuthorizeUrl(), live.GitHubURL+"/login/oauth/authorize?") || started.GetExpireTime() == nil {
		t.Fatalf("connect: %v", started)
	}
	wait := waitConnected(ctx, client, started.GetFlowId())
	if code := live.approve(t, started.GetAuthorizeUrl()); code != http.StatusOK {
		t.Fatalf("the callback answered %d", code)
	}
	integration, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if integration.GetApp() != "github" || integration.GetAccount() != "octocat" || integration.GetEndUserId() != "u-1" ||
		integration.GetKind() != interlockv1.IntegrationKind_INTEGRATION_KIND_OAUTH {
		t.Fatalf("connected: %v", integration)
	}
	// An ended flow answers at once.
	again, err := client.WaitConnected(ctx, started.GetFlowId())
	if err != nil || again.GetIntegrationId() != integration.GetIntegrationId() {
		t.Fatalf("waiting again: %v, %v", err, again)
	}
	if got := listIDs(t, client, &interlockv1.ListIntegrationsRequest{EndUserId: "u-1"}); !slices.Equal(got, []string{integration.GetIntegrationId()}) {
		t.Fatalf("u-1 sees %v", got)
	}
	if got := listIDs(t, client, &interlockv1.ListIntegrationsRequest{EndUserId: "u-2"}); len(got) != 0 {
		t.Fatalf("u-2 sees %v", got)
	}
	gone, err := client.Integrations.Disconnect(ctx, &interlockv1.DisconnectRequest{IntegrationId: integration.GetIntegrationId()})
	if err != nil || gone.GetIntegration().GetStatus() != interlockv1.IntegrationStatus_INTEGRATION_STATUS_DISCONNECTED {
		t.Fatalf("disconnect: %v, %v", err, gone)
	}
}

// TestDeclinedConnectIsConnectError pins that a flow the end user declines
// makes WaitConnected return a *ConnectError with the state and the reason,
// which is also a FailedPrecondition status.
func TestDeclinedConnectIsConnectError(t *testing.T) {
	ctx := testContext(t)
	client := sandboxClient(t, "go-connect-declined")
	started, err := client.Integrations.Connect(ctx, &interlockv1.ConnectRequest{
		App: "github", EndUserId: "u-1", Scope: interlockv1.ConnectScope_CONNECT_SCOPE_SANDBOX,
	})
	if err != nil {
		t.Fatal(err)
	}
	wait := waitConnected(ctx, client, started.GetFlowId())
	if code := live.deny(t, started.GetAuthorizeUrl()); code != http.StatusBadRequest {
		t.Fatalf("the callback answered %d", code)
	}
	_, err = wait()
	var failed *interlock.ConnectError
	if !errors.As(err, &failed) {
		t.Fatalf("wait: %v", err)
	}
	if failed.FlowID != started.GetFlowId() || failed.State != interlockv1.ConnectState_CONNECT_STATE_FAILED || !strings.Contains(failed.Reason, "access_denied") {
		t.Fatalf("connect error: %+v", failed)
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.HasPrefix(err.Error(), "connect flow "+started.GetFlowId()+" failed: ") {
		t.Fatalf("as a status: %v", err)
	}
	if got := listIDs(t, client, &interlockv1.ListIntegrationsRequest{}); len(got) != 0 {
		t.Fatalf("declined, yet listed: %v", got)
	}
}

// TestWaitConnectedDeadlineLeavesTheFlowOpen pins that a deadline on ctx
// stops the wait, not the flow: the end user can still finish, and waiting
// again returns the integration.
func TestWaitConnectedDeadlineLeavesTheFlowOpen(t *testing.T) {
	ctx := testContext(t)
	client := sandboxClient(t, "go-connect-deadline")
	started, err := client.Integrations.Connect(ctx, &interlockv1.ConnectRequest{App: "github", EndUserId: "u-1"})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := client.WaitConnected(short, started.GetFlowId()); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("wait with a deadline: %v", err)
	}
	if code := live.approve(t, started.GetAuthorizeUrl()); code != http.StatusOK {
		t.Fatalf("the callback answered %d", code)
	}
	if integration, err := client.WaitConnected(ctx, started.GetFlowId()); err != nil || integration.GetAccount() != "octocat" {
		t.Fatalf("waiting again: %v, %v", err, integration)
	}
}

// TestConnectErrorMessage pins the error's text and status for both ended states.
func TestConnectErrorMessage(t *testing.T) {
	expired := &interlock.ConnectError{FlowID: "flow_1", State: interlockv1.ConnectState_CONNECT_STATE_EXPIRED}
	if expired.Error() != "connect flow flow_1 expired" || status.Code(expired) != codes.FailedPrecondition {
		t.Errorf("expired: %q, %v", expired.Error(), status.Code(expired))
	}
	failed := &interlock.ConnectError{FlowID: "flow_2", State: interlockv1.ConnectState_CONNECT_STATE_FAILED, Reason: "access_denied"}
	if got := status.Convert(failed).Message(); got != "connect flow flow_2 failed: access_denied" {
		t.Errorf("failed: %q", got)
	}
}
