package interlock

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/interlock/interlock/clients/go/interlockv1"
)

// Client is a connection to one Interlock daemon. It is safe for concurrent
// use; create one per daemon and Close it when done.
type Client struct {
	conn *grpc.ClientConn

	// Router is the AgentRouter stub, its calls authenticated with the API
	// key; Run and RunText are built on it. Use it directly for a Recv loop.
	Router interlockv1.AgentRouterClient
	// Sandboxes administers sandboxes, their API keys, quotas and secrets;
	// its calls carry the operator key (see WithOperatorKey).
	Sandboxes interlockv1.SandboxesClient
	// Conversations reads and deletes end users' conversations; its calls
	// carry the API key.
	Conversations interlockv1.ConversationsClient
	// Integrations connects data sources (OAuth apps such as GitHub, MCP
	// servers) for an end user or the whole sandbox, lists and disconnects
	// them; its calls carry the API key. WaitConnected is built on it.
	Integrations interlockv1.IntegrationsClient
}

type options struct {
	operatorKey string
	creds       credentials.TransportCredentials
	dial        []grpc.DialOption
}

// An Option configures NewClient.
type Option func(*options)

// WithOperatorKey sets the operator key the Sandboxes calls authenticate with.
func WithOperatorKey(key string) Option {
	return func(o *options) { o.operatorKey = key }
}

// WithTransportCredentials replaces the default plaintext connection, e.g.
// with credentials.NewTLS(config).
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = creds }
}

// WithDialOptions adds options to the underlying grpc.NewClient call
// (interceptors, keepalive, a custom resolver).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// NewClient returns a client of the daemon at target (a gRPC target such as
// "127.0.0.1:7600" or "dns:///interlock.internal:7600"). apiKey is the
// sandbox API key runs, conversations and integrations authenticate with. Like
// grpc.NewClient it does not connect yet: the first call does.
//
// A call that needs a key the client was not given fails locally with
// codes.Unauthenticated, before anything is sent.
func NewClient(target, apiKey string, opts ...Option) (*Client, error) {
	o := options{creds: insecure.NewCredentials()}
	for _, opt := range opts {
		opt(&o)
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(o.creds)}, o.dial...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, err
	}
	api := keyedConn{conn, apiKey, "sandbox API key", "pass apiKey to NewClient"}
	operator := keyedConn{conn, o.operatorKey, "operator key", "use WithOperatorKey"}
	return &Client{
		conn:          conn,
		Router:        interlockv1.NewAgentRouterClient(api),
		Sandboxes:     interlockv1.NewSandboxesClient(operator),
		Conversations: interlockv1.NewConversationsClient(api),
		Integrations:  interlockv1.NewIntegrationsClient(api),
	}, nil
}

// Close closes the connection; calls in flight fail with codes.Canceled.
func (c *Client) Close() error {
	return c.conn.Close()
}

// keyedConn sends every call through conn with "authorization: Bearer key".
type keyedConn struct {
	conn       grpc.ClientConnInterface
	key        string
	what, hint string
}

func (k keyedConn) authorize(ctx context.Context) (context.Context, error) {
	if k.key == "" {
		return nil, status.Errorf(codes.Unauthenticated, "no %s configured: %s", k.what, k.hint)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+k.key), nil
}

func (k keyedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx, err := k.authorize(ctx)
	if err != nil {
		return err
	}
	return k.conn.Invoke(ctx, method, args, reply, opts...)
}

func (k keyedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, err := k.authorize(ctx)
	if err != nil {
		return nil, err
	}
	return k.conn.NewStream(ctx, desc, method, opts...)
}
