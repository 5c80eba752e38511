package e2e

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// pollUntil calls cond until it returns nil, failing the test with the phase
// it was waiting for and cond's last error when timeout passes first.
func pollUntil(t *testing.T, timeout time.Duration, phase string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("phase %q: timed out after %v: %v", phase, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawConn connects to one address with the given transport credentials,
// bypassing broker/client, for callers the client would never build.
func rawConn(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// brokerCreds are the credentials a node of role src presents to a broker of
// the network, accepting only a broker of the network's trust domain.
func brokerCreds(n *Network, src pki.Source) credentials.TransportCredentials {
	return pki.ClientCredentials(src, pki.AuthorizeRoles(n.td, pki.RoleBroker))
}

// participantCreds are the credentials src presents to participant j's
// Responder, accepting only that participant's SPIFFE ID.
func participantCreds(t *testing.T, n *Network, src pki.Source, j int) credentials.TransportCredentials {
	t.Helper()
	id, err := pki.NewIdentity(n.td, pki.RoleParticipant, n.Participants[j].ID)
	if err != nil {
		t.Fatal(err)
	}
	return pki.ClientCredentials(src, pki.AuthorizeID(id.ID))
}

// logLines parses every JSON log line the network wrote so far.
func logLines(t *testing.T, logs *logBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// rpcLogged returns the codes of the finished calls of method that a node
// (attr "broker" or "participant" equal to node) logged.
func rpcLogged(t *testing.T, logs *logBuffer, nodeAttr, node, method string) []string {
	t.Helper()
	var codes []string
	for _, l := range logLines(t, logs) {
		if l["msg"] == "rpc" && l[nodeAttr] == node && l["method"] == method {
			c, _ := l["code"].(string)
			codes = append(codes, c)
		}
	}
	return codes
}

// responderStates maps each member to its state in a query's answer, failing
// the test when a member appears twice.
func responderStates(t *testing.T, rs []*qhinv1.ResponderStatus) map[string]qhinv1.ResponderState {
	t.Helper()
	m := map[string]qhinv1.ResponderState{}
	for _, r := range rs {
		if _, dup := m[r.ParticipantId]; dup {
			t.Errorf("member %s has two statuses", r.ParticipantId)
		}
		m[r.ParticipantId] = r.Status
	}
	return m
}

// assertStates checks that every member in want has its state, and that no
// other member was reported.
func assertStates(t *testing.T, rs []*qhinv1.ResponderStatus, want map[string]qhinv1.ResponderState) {
	t.Helper()
	got := responderStates(t, rs)
	for id, w := range want {
		if got[id] != w {
			t.Errorf("member %s: state %v, want %v (all: %v)", id, got[id], w, rs)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("member %s reported (%v), want no status for it", id, got[id])
		}
	}
}

// containsValue reports whether value appears in text as a value of its own:
// not as a run of digits inside a number or an id (a postal code such as
// 01103 can occur by chance in a timing like 0.011031 or a hex query id).
func containsValue(text, value string) bool {
	for i := 0; ; {
		j := strings.Index(text[i:], value)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(value)
		if !isWordByte(text, start-1) && !isWordByte(text, end) {
			return true
		}
		i = start + 1
	}
}

func isWordByte(s string, i int) bool {
	if i < 0 || i >= len(s) {
		return false
	}
	c := s[i]
	return c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func TestContainsValue(t *testing.T) {
	for _, tt := range []struct {
		text, value string
		want        bool
	}{
		{`{"postal":"01103"}`, "01103", true},
		{`code 01103 rejected`, "01103", true},
		{`{"ms":0.011031}`, "01103", false},
		{`{"query_id":"9ab01103cd"}`, "01103", false},
		{`Maria Elena`, "Maria", true},
		{`Mariana`, "Maria", false},
	} {
		if got := containsValue(tt.text, tt.value); got != tt.want {
			t.Errorf("containsValue(%q, %q) = %v, want %v", tt.text, tt.value, got, tt.want)
		}
	}
}
