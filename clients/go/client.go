package interlock

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/interlock/interlock/clients/go/interlockv1"
)

// Client is a connection to one Interlock daemon. It is safe for concurrent
// use; create one per daemon and Close it when done.
//
// Its fields are the generated stubs of every service of the interlock.v1
// API, each call carrying the key its service authenticates with and
// failing with an *Error.
type Client struct {
	conn     *grpc.ClientConn
	api      keyedConn
	operator keyedConn

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
	// Agents saves agents (provider, model, system prompt, tools, compute
	// settings) that a run names by slug (RunRequest.Agent); its calls carry
	// the API key.
	Agents interlockv1.AgentsClient
	// Ledger reads what runs cost, entry by entry or added up. Its calls
	// carry the API key (the key's own sandbox), or, in a client given only
	// an operator key, the operator key (any sandbox, named by SandboxId).
	Ledger interlockv1.LedgerClient
	// Compute sets and clears pauses (kill switches; the operator key) and
	// operates compute sessions, providers and placements (the API key, or
	// the operator key in a client given only that one, as for Ledger).
	Compute interlockv1.ComputeClient
}

type options struct {
	operatorKey string
	creds       credentials.TransportCredentials
	dial        []grpc.DialOption
}

// An Option configures NewClient.
type Option func(*options)

// WithOperatorKey sets the operator key that the Sandboxes calls, the
// Compute pause calls and OperatorConn authenticate with.
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

// operatorMethods are the calls outside Sandboxes that only the operator
// key may make.
var operatorMethods = map[string]bool{
	interlockv1.Compute_SetPause_FullMethodName:   true,
	interlockv1.Compute_ClearPause_FullMethodName: true,
	interlockv1.Compute_ListPauses_FullMethodName: true,
}

// NewClient returns a client of the daemon at target (a gRPC target such as
// "127.0.0.1:7600" or "dns:///interlock.internal:7600"). apiKey is the
// sandbox API key runs, conversations, integrations, agents, the ledger and
// compute sessions authenticate with. Like grpc.NewClient it does not
// connect yet: the first call does.
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
	apiCred := credential{apiKey, "sandbox API key", "pass apiKey to NewClient"}
	operatorCred := credential{o.operatorKey, "operator key", "use WithOperatorKey"}
	// The ledger and compute sessions take either key: the API key when the
	// client has one (its own sandbox), else the operator's (any sandbox).
	eitherCred := apiCred
	if apiKey == "" && o.operatorKey != "" {
		eitherCred = operatorCred
	}
	eitherCred.hint = "pass apiKey to NewClient, or use WithOperatorKey"
	api := keyedConn{conn, func(string) credential { return apiCred }}
	operator := keyedConn{conn, func(string) credential { return operatorCred }}
	either := keyedConn{conn, func(method string) credential {
		if operatorMethods[method] {
			return operatorCred
		}
		return eitherCred
	}}
	return &Client{
		conn:          conn,
		api:           api,
		operator:      operator,
		Router:        interlockv1.NewAgentRouterClient(api),
		Sandboxes:     interlockv1.NewSandboxesClient(operator),
		Conversations: interlockv1.NewConversationsClient(api),
		Integrations:  interlockv1.NewIntegrationsClient(api),
		Agents:        interlockv1.NewAgentsClient(api),
		Ledger:        interlockv1.NewLedgerClient(either),
		Compute:       interlockv1.NewComputeClient(either),
	}, nil
}

// Conn is the client's connection with every call authenticated by the API
// key and failing with an *Error, for stubs the client does not hold:
// interlockv1.NewAgentRouterClient(client.Conn()), or those of a newer API
// than this client's. It shares the client's connection; Close closes it.
func (c *Client) Conn() grpc.ClientConnInterface { return c.api }

// OperatorConn is Conn with every call authenticated by the operator key
// (see WithOperatorKey): interlockv1.NewLedgerClient(client.OperatorConn())
// reads any sandbox's ledger in a client that also has an API key.
func (c *Client) OperatorConn() grpc.ClientConnInterface { return c.operator }

// Close closes the connection; calls in flight fail with codes.Canceled.
func (c *Client) Close() error {
	return c.conn.Close()
}

// credential is a key and, for the error when it is missing, what it is and
// how to give it.
type credential struct {
	key, what, hint string
}

// keyedConn sends every call through conn with "authorization: Bearer key",
// the key chosen by method, and turns the statuses it returns into *Error.
type keyedConn struct {
	conn grpc.ClientConnInterface
	pick func(method string) credential
}

func (k keyedConn) authorize(ctx context.Context, method string) (context.Context, error) {
	cred := k.pick(method)
	if cred.key == "" {
		return nil, localError(codes.Unauthenticated, "no %s configured: %s", cred.what, cred.hint)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred.key), nil
}

func (k keyedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx, err := k.authorize(ctx, method)
	if err != nil {
		return err
	}
	return asError(k.conn.Invoke(ctx, method, args, reply, opts...))
}

func (k keyedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, err := k.authorize(ctx, method)
	if err != nil {
		return nil, err
	}
	stream, err := k.conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, asError(err)
	}
	return errorStream{stream}, nil
}

// errorStream is a stream whose statuses are *Error; io.EOF, the end of a
// stream that ended OK, stays io.EOF.
type errorStream struct {
	grpc.ClientStream
}

func (s errorStream) SendMsg(m any) error { return asError(s.ClientStream.SendMsg(m)) }

func (s errorStream) RecvMsg(m any) error { return asError(s.ClientStream.RecvMsg(m)) }

func (s errorStream) CloseSend() error { return asError(s.ClientStream.CloseSend()) }

func (s errorStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	return md, asError(err)
}
