package interlock

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/interlock/interlock/clients/go/interlockv1"
)

// TestCodeNamesRoundTrip pins that every status code's canonical name maps
// back to the code, and that a name this client does not know is Unknown.
func TestCodeNamesRoundTrip(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if got := codeNamed(codeName(c)); got != c {
			t.Errorf("%v: %q maps back to %v", c, codeName(c), got)
		}
	}
	if codeName(codes.Canceled) != "CANCELLED" || codeNamed("NOT_A_CODE") != codes.Unknown {
		t.Fatal("canonical names")
	}
}

// TestOutcomeErr pins Outcome.Err: nil after Finish, the router's code after
// an error event, and Unknown for a stream that ended without either.
func TestOutcomeErr(t *testing.T) {
	var empty Outcome
	if status.Code(empty.Err()) != codes.Unknown {
		t.Fatalf("incomplete stream: %v", empty.Err())
	}
	failed := Outcome{Error: &interlockv1.Error{Code: "RESOURCE_EXHAUSTED", Message: "quota", Retryable: true}}
	err := failed.Err()
	if status.Code(err) != codes.ResourceExhausted || err.Error() != "run failed: RESOURCE_EXHAUSTED: quota" {
		t.Fatalf("error event: %v", err)
	}
	finished := Outcome{Finish: &interlockv1.Finish{}}
	if finished.Err() != nil {
		t.Fatal(finished.Err())
	}
}
