package interlock_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

// TestDaemonRestartMidStreamResumesTheRun pins what a caller sees when the
// daemon shuts down under a run (Unavailable and retryable: the daemon's
// error event as a *RunError, or, when the stream is cut before it, the
// call's *Error) and that running the same request again once it is back,
// same RequestId, finishes the turn as the same run instead of starting a
// second one.
func TestDaemonRestartMidStreamResumesTheRun(t *testing.T) {
	client := newClient(t, live.APIKey)
	ctx := testContext(t)
	live.enqueue(t, []step{{"text", "Part one. "}, {"stall"}}, []step{{"text", "Part two."}})
	request := &interlockv1.RunRequest{Message: "A long one", EndUserId: "u-restart", RequestId: "go-restart"}
	first := &interlock.Outcome{}
	var stopped sync.WaitGroup
	var cut error
	for event, err := range client.Run(ctx, request) {
		if err != nil {
			cut = err
			break
		}
		first.Add(event)
		if event.GetTextDelta() != nil {
			stopped.Go(func() { live.stopDaemon(t) })
		}
	}
	stopped.Wait()
	restarted := false
	t.Cleanup(func() {
		if !restarted { // the rest of the suite needs the daemon
			live.startDaemon(t)
		}
	})
	var runErr *interlock.RunError
	var callErr *interlock.Error
	switch {
	case cut == nil && errors.As(first.Err(), &runErr):
		if runErr.Code != codes.Unavailable || !runErr.Retryable {
			t.Fatalf("the shutdown's error event: %+v", runErr)
		}
	case errors.As(cut, &callErr):
		if callErr.Code != codes.Unavailable || !callErr.Retryable {
			t.Fatalf("the stream cut by the shutdown: %#v", callErr)
		}
	default:
		t.Fatalf("after the shutdown: stream %v, run %v", cut, first.Err())
	}

	live.startDaemon(t)
	restarted = true
	again, err := client.RunText(ctx, request)
	if err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if again.RunID != first.RunID || again.SessionID != first.SessionID || again.Finish == nil {
		t.Fatalf("the retry ran %s in %s, the first %s in %s", again.RunID, again.SessionID, first.RunID, first.SessionID)
	}
	// The resumed stream repeats what was recorded, then carries the turn on.
	if again.Text() != "Part one. Part two." {
		t.Fatalf("the retry said %q", again.Text())
	}
	if got := live.waitRun(t, "go-restart"); got != "finished" {
		t.Fatalf("run status %q", got)
	}
}

// TestConnectionLostMidStreamIsRetryable pins that a connection cut under a
// run ends the iteration with an *Error, Unavailable and retryable (not a
// cancellation), and that the same request again finishes the turn as the
// same run.
func TestConnectionLostMidStreamIsRetryable(t *testing.T) {
	link := startProxy(t, live.Address)
	client, err := interlock.NewClient(link.Address(), live.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx := testContext(t)
	live.enqueue(t, []step{{"text", "Part one. "}, {"stall"}}, []step{{"text", "Part two."}})
	request := &interlockv1.RunRequest{Message: "A long one", EndUserId: "u-lost", RequestId: "go-lost"}
	first := &interlock.Outcome{}
	var failure error
	for event, err := range client.Run(ctx, request) {
		if err != nil {
			failure = err
			break
		}
		first.Add(event)
		if event.GetTextDelta() != nil {
			link.cut()
		}
	}
	var callErr *interlock.Error
	if !errors.As(failure, &callErr) || callErr.Code != codes.Unavailable || !callErr.Retryable ||
		errors.Is(failure, context.Canceled) || status.Code(failure) != codes.Unavailable {
		t.Fatalf("after the cut: %#v", failure)
	}
	// The daemon notices its caller left and records the run; a retry before
	// then would find it still in progress.
	if got := live.waitRun(t, "go-lost"); got != "cancelled" {
		t.Fatalf("the abandoned run's status is %q", got)
	}

	again, err := client.RunText(ctx, request)
	if err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if again.RunID != first.RunID || again.Finish == nil || again.Text() != "Part one. Part two." {
		t.Fatalf("the retry ran %s (finish %v) saying %q, the first %s", again.RunID, again.Finish, again.Text(), first.RunID)
	}
}

// proxy relays TCP connections to a target until cut closes them, standing
// for a network between the client and the daemon that fails.
type proxy struct {
	listener net.Listener
	target   string
	mu       sync.Mutex
	conns    []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{listener: listener, target: target}
	t.Cleanup(func() {
		listener.Close()
		p.cut()
	})
	go p.serve()
	return p
}

// Address is where the proxy listens.
func (p *proxy) Address() string { return p.listener.Addr().String() }

func (p *proxy) serve() {
	for {
		in, err := p.listener.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go relay(in, out)
		go relay(out, in)
	}
}

func relay(to, from net.Conn) {
	_, _ = io.Copy(to, from)
	to.Close()
	from.Close()
}

// cut closes every connection relayed so far; new ones are relayed again.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
