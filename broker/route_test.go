package broker

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

const (
	active    = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE
	suspended = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED
	retired   = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED
)

func member(id string, st qhinv1.ParticipantStatus, answers ...string) *qhinv1.Participant {
	return &qhinv1.Participant{Id: id, Status: st, RespondPurposes: answers}
}

func TestRoute_AsksActiveMembersThatAnswerThePurpose(t *testing.T) {
	directory := []*qhinv1.Participant{
		member("p1", active, "all"),
		member("p2", active, "all"),
		member("p3", suspended, "all"),
		member("p4", retired, "all"),
		member("p5", active, "T-PYMNT"),
		member("p6", active, "T-TRTMNT", "T-TREAT"),
		member("p7", active), // answers nothing
		member("p8", suspended),
	}
	tests := []struct {
		initiator, purpose   string
		ask, skipped, denied string
	}{
		// A member that does not answer a required purpose is DENIED, not
		// skipped; a suspended one is skipped whatever the purpose.
		{"p1", "T-TRTMNT", "p2,p6", "p3,p8", "p5,p7"},
		{"p2", "T-PYMNT", "p1,p5", "p3,p6,p7,p8", ""},
		{"p6", "T-TREAT", "p1,p2", "p3,p5,p7,p8", ""},
		{"p6", "T-IAS", "p1,p2", "p3,p8", "p5,p7"},
	}
	for _, tt := range tests {
		t.Run(tt.initiator+"/"+tt.purpose, func(t *testing.T) {
			ask, notAsked, _ := route(directory, tt.initiator, tt.purpose, RoutingBroadcast, nil)
			var a, s, d []string
			for _, p := range ask {
				a = append(a, p.Id)
			}
			for _, st := range notAsked {
				switch st.Status {
				case qhinv1.ResponderState_RESPONDER_STATE_SKIPPED:
					s = append(s, st.ParticipantId)
				case qhinv1.ResponderState_RESPONDER_STATE_DENIED:
					d = append(d, st.ParticipantId)
					if !strings.Contains(st.Detail, "information blocking") {
						t.Errorf("denied %s: %q does not say why", st.ParticipantId, st.Detail)
					}
				default:
					t.Errorf("not asked %s: %v", st.ParticipantId, st.Status)
				}
				if st.Detail == "" {
					t.Errorf("not asked %s: no detail", st.ParticipantId)
				}
			}
			if got := strings.Join(a, ","); got != tt.ask {
				t.Errorf("ask %s, want %s", got, tt.ask)
			}
			if got := strings.Join(s, ","); got != tt.skipped {
				t.Errorf("skipped %s, want %s", got, tt.skipped)
			}
			if got := strings.Join(d, ","); got != tt.denied {
				t.Errorf("denied %s, want %s", got, tt.denied)
			}
		})
	}
}

func TestRoute_Modes(t *testing.T) {
	directory := []*qhinv1.Participant{
		member("p1", active, "all"),
		member("p2", active, "all"),
		member("p3", active, "all"),
		member("p4", active, "all"),
		member("p5", suspended, "all"),
		member("p6", active, "T-PYMNT"),
	}
	set := func(ids ...string) map[string]bool {
		m := map[string]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	tests := []struct {
		name     string
		mode     Routing
		holders  map[string]bool
		ask      string
		noHit    string // skipped for want of a locator hit
		decision string
	}{
		{"targeted hit", RoutingTargetedThenBroadcast, set("p3"), "p3", "p2,p4", decisionTargeted},
		{"targeted hits", RoutingTargetedThenBroadcast, set("p2", "p4", "p9"), "p2,p4", "p3", decisionTargeted},
		{"no hit falls back to broadcast", RoutingTargetedThenBroadcast, set(), "p2,p3,p4", "", decisionFallback},
		{"no tokens fall back to broadcast", RoutingTargetedThenBroadcast, nil, "p2,p3,p4", "", decisionFallback},
		{"a hit at the initiator only is no hit", RoutingTargetedThenBroadcast, set("p1"), "p2,p3,p4", "", decisionFallback},
		{"hits at members that may not be asked are no hit", RoutingTargetedThenBroadcast, set("p5", "p6"), "p2,p3,p4", "", decisionFallback},
		{"targeted-only hit", RoutingTargetedOnly, set("p4"), "p4", "p2,p3", decisionTargeted},
		{"targeted-only without a hit asks nobody", RoutingTargetedOnly, set(), "", "p2,p3,p4", decisionNone},
		{"broadcast ignores the locator", RoutingBroadcast, set("p3"), "p2,p3,p4", "", decisionBroadcast},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ask, skipped, decision := route(directory, "p1", "T-TREAT", tt.mode, tt.holders)
			var a, noHit []string
			for _, p := range ask {
				a = append(a, p.Id)
			}
			other := map[string]string{}
			for _, s := range skipped {
				if s.Status != qhinv1.ResponderState_RESPONDER_STATE_SKIPPED {
					t.Errorf("%s: status %v", s.ParticipantId, s.Status)
				}
				if s.Detail == NoLocatorHit {
					noHit = append(noHit, s.ParticipantId)
				} else {
					other[s.ParticipantId] = s.Detail
				}
			}
			if got := strings.Join(a, ","); got != tt.ask {
				t.Errorf("ask %q, want %q", got, tt.ask)
			}
			if got := strings.Join(noHit, ","); got != tt.noHit {
				t.Errorf("skipped for no hit %q, want %q", got, tt.noHit)
			}
			// The members that may not be asked are skipped for their
			// own reasons in every mode.
			if !strings.Contains(other["p5"], "suspended") || !strings.Contains(other["p6"], "does not answer") || len(other) != 2 {
				t.Errorf("other skipped %v", other)
			}
			if decision != tt.decision {
				t.Errorf("decision %s, want %s", decision, tt.decision)
			}
		})
	}
}

func TestParseRouting(t *testing.T) {
	for _, s := range []string{"targeted-then-broadcast", "targeted-only", "broadcast"} {
		if r, err := ParseRouting(s); err != nil || string(r) != s {
			t.Errorf("%s: %v %v", s, r, err)
		}
	}
	if _, err := ParseRouting("targeted"); err == nil {
		t.Error("targeted: no error")
	}
}

func TestRouteLinks_GroupsByMemberAndSkipsTheUnaskable(t *testing.T) {
	directory := index([]*qhinv1.Participant{member("p1", active, "all"), member("p2", suspended, "all"), member("p3", active, "T-PYMNT")})
	links := []*qhinv1.PatientLink{
		{ParticipantId: "p1", PatientId: "a"},
		{ParticipantId: "p9", PatientId: "x"},
		{ParticipantId: "p1", PatientId: "b"},
		{ParticipantId: "p2", PatientId: "c"},
		{ParticipantId: "p1", PatientId: "a"},
		{ParticipantId: "p3", PatientId: "d"},
	}
	ask, patients, skipped := routeLinks(directory, links, "T-TREAT")
	if len(ask) != 1 || ask[0].Id != "p1" {
		t.Fatalf("ask %v, want p1 only", ask)
	}
	if got := strings.Join(patients["p1"], ","); got != "a,b" {
		t.Errorf("p1 patients %s, want a,b (once each)", got)
	}
	reasons := map[string]string{}
	for _, s := range skipped {
		reasons[s.ParticipantId] = s.Detail
	}
	for id, want := range map[string]string{"p9": "not a member", "p2": "suspended", "p3": "does not answer T-TREAT"} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("%s skipped for %q, want %q", id, reasons[id], want)
		}
	}
}

func TestRoutingTable_ReloadsWhenTheDirectoryChanges(t *testing.T) {
	f, err := fsm.Open(filepath.Join(t.TempDir(), "fsm.db"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var idx uint64
	apply := func(c *qhinv1.Command) {
		t.Helper()
		data, _ := fsm.Encode(c)
		idx++
		if r := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data}).(*fsm.Result); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	reg := func(id string) *qhinv1.Command {
		c, _ := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, "", time.Now(),
			&qhinv1.Participant{Id: id, SpiffeId: "spiffe://qhin.test/participant/" + id, Endpoint: "127.0.0.1:1"})
		return c
	}
	apply(reg("p1"))
	var rt routingTable
	members, _, err := rt.get(f)
	if err != nil || len(members) != 1 {
		t.Fatalf("members %v, err %v", members, err)
	}
	apply(reg("p2"))
	c, _ := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_SET_PARTICIPANT_STATUS, "", time.Now(),
		&qhinv1.SetParticipantStatus{ParticipantId: "p1", Status: retired})
	apply(c)
	members, byID, err := rt.get(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || members[0].Id != "p2" || byID["p1"] != nil {
		t.Errorf("after registering p2 and retiring p1: %v", members)
	}
}
