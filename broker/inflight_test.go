package broker

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestInflight_CapsEachInitiatorAlone(t *testing.T) {
	f := newInflight(2, "queries", "--max-queries-per-initiator")
	r1, err := f.acquire("p1")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.acquire("p1")
	if err != nil {
		t.Fatal(err)
	}
	// p1 is at its limit; p2 is not.
	_, err = f.acquire("p1")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "--max-queries-per-initiator") {
		t.Fatalf("a third query of p1: %v, want ResourceExhausted naming the limit", err)
	}
	r3, err := f.acquire("p2")
	if err != nil {
		t.Fatalf("p2 refused while p1 is at its limit: %v", err)
	}
	// Releasing twice counts once.
	r1()
	r1()
	if _, err := f.acquire("p1"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := f.acquire("p1"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a release counted twice: %v", err)
	}
	r2()
	r3()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.n) != 1 || f.n["p1"] != 1 {
		t.Errorf("counts %v, want only p1's one running call", f.n)
	}
}
