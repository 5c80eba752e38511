package e2e

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/purpose"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The duties of the TEFCA exchange purposes, written out here independently
// of the purpose table, so that a change to either is deliberate.
var (
	requiredPurposes = []string{"T-TRTMNT", "T-IAS"}
	pushOnlyPurposes = []string{"T-PH-ECR", "T-PH-ELR"}
)

// setPurposes replaces what participant id may initiate and answer.
func setPurposes(t *testing.T, dir qhinv1.DirectoryClient, n *Network, id string, initiates, answers []string) {
	t.Helper()
	got, err := dir.GetParticipant(callCtx(t), &qhinv1.GetParticipantRequest{ParticipantId: id})
	if err != nil {
		t.Fatal(err)
	}
	p := proto.Clone(got.Participant).(*qhinv1.Participant)
	p.InitiatePurposes, p.RespondPurposes = initiates, answers
	p.CreatedAt, p.UpdatedAt = nil, nil
	if _, err := dir.UpdateParticipant(callCtx(t), &qhinv1.UpdateParticipantRequest{Participant: p}); err != nil {
		t.Fatalf("phase %q: %v", "update "+id+"'s purposes", err)
	}
}

// TestPurposes_Matrix asks, for every exchange purpose, with the initiator
// allowed to initiate it or not and the responder answering it or not,
// whether the broker answers as the purpose's duty says: unknown and
// push-only codes are invalid, a purpose the initiator may not initiate is
// refused, a responder that does not answer an optional purpose is skipped,
// and one that does not answer a required purpose is reported DENIED.
// Before purposes were enforced this way, an empty purpose list meant every
// purpose: the initiator that may initiate none got answers, and a
// responder that answers none was asked.
func TestPurposes_Matrix(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	dir := dial(t, n, n.Operator()).Directory()
	gw := dial(t, n, n.ParticipantSource(0)).Gateway() // p1 asks; p2 holds Maria

	all := purpose.All()
	for _, c := range append(slices.Clone(requiredPurposes), pushOnlyPurposes...) {
		if !slices.ContainsFunc(all, func(p purpose.Purpose) bool { return p.Code == c }) {
			t.Fatalf("%s is not in the purpose table", c)
		}
	}
	setPurposes(t, dir, n, "p3", []string{"all"}, []string{"all"})
	for _, p := range all {
		for _, initiates := range []bool{true, false} {
			for _, answers := range []bool{true, false} {
				code := p.Code
				var init, ans []string
				if initiates {
					init = []string{code}
				}
				if answers {
					ans = []string{code}
				}
				if slices.Contains(pushOnlyPurposes, code) {
					// A push-only purpose cannot be listed at all.
					init, ans = nil, nil
				}
				setPurposes(t, dir, n, "p1", init, []string{"all"})
				setPurposes(t, dir, n, "p2", []string{"all"}, ans)
				name := code + "/initiates=" + yes(initiates) + "/answers=" + yes(answers)
				t.Run(name, func(t *testing.T) {
					resp, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: code, Requester: requester(), Demographics: maria})
					switch {
					case slices.Contains(pushOnlyPurposes, code):
						refused(t, err, codes.InvalidArgument, "purpose_of_use")
						return
					case !initiates:
						refused(t, err, codes.PermissionDenied, "purpose")
						if strings.Contains(status.Convert(err).Message(), "T-NOPE") {
							t.Error("echoed")
						}
						return
					}
					if err != nil {
						t.Fatalf("discovery: %v", err)
					}
					st := responderStates(t, resp.Responders)
					switch {
					case answers:
						if st["p2"] != qhinv1.ResponderState_RESPONDER_STATE_OK {
							t.Errorf("p2 answers %s: state %v, want OK", code, st["p2"])
						}
					case slices.Contains(requiredPurposes, code):
						if st["p2"] != qhinv1.ResponderState_RESPONDER_STATE_DENIED {
							t.Errorf("p2 does not answer required %s: state %v, want DENIED", code, st["p2"])
						}
					default:
						if st["p2"] != qhinv1.ResponderState_RESPONDER_STATE_SKIPPED {
							t.Errorf("p2 does not answer optional %s: state %v, want SKIPPED", code, st["p2"])
						}
					}
					if st["p3"] != qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH {
						t.Errorf("p3 answers every purpose: state %v, want NO_MATCH", st["p3"])
					}
				})
			}
		}
	}
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// TestPurposes_UnknownCodeIsNotEchoed checks that a made-up code is refused
// as InvalidArgument whose message names the field, never the code.
func TestPurposes_UnknownCodeIsNotEchoed(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	for _, code := range []string{"T-NOPE", "t-trtmnt", "T-TRTMNT ", "<script>"} {
		_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: code, Requester: requester(), Demographics: maria})
		refused(t, err, codes.InvalidArgument, "purpose_of_use", code)
	}
}

// TestPurposes_RequiredTreatmentNeedsAValidNPI checks T-TRTMNT's rule: the
// requester's NPI is required and must pass its check digit (Luhn over the
// 80840 prefix), else InvalidArgument naming requester.npi. Before, the NPI
// was not looked at.
func TestPurposes_RequiredTreatmentNeedsAValidNPI(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	for _, tc := range []struct {
		purpose, npi string
		code         codes.Code
	}{
		{"T-TRTMNT", "1234567893", codes.OK},
		{"T-TRTMNT", "", codes.InvalidArgument},
		{"T-TRTMNT", "1234567890", codes.InvalidArgument}, // wrong check digit
		{"T-TRTMNT", "123456789", codes.InvalidArgument},  // 9 digits
		{"T-TRTMNT", "12345678931", codes.InvalidArgument},
		{"T-TRTMNT", "12345a7893", codes.InvalidArgument},
		{"T-TREAT", "", codes.OK},
		{"T-TREAT", "1234567890", codes.InvalidArgument}, // checked when given
	} {
		r := requester()
		r.Npi = tc.npi
		_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: tc.purpose, Requester: r, Demographics: maria})
		if tc.code == codes.OK {
			if err != nil {
				t.Errorf("%s with NPI %q: %v", tc.purpose, tc.npi, err)
			}
			continue
		}
		t.Run(tc.purpose+"/"+tc.npi, func(t *testing.T) { refused(t, err, tc.code, "requester.npi", tc.npi) })
	}
}
