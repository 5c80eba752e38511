package sizes

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestCheck(t *testing.T) {
	small := Limits{IDBytes: 8, TextBytes: 16, ListItems: 2, Links: 3}
	long := func(n int) string { return strings.Repeat("Z", n) }
	links := func(n int, patient string) []*qhinv1.PatientLink {
		out := make([]*qhinv1.PatientLink, n)
		for i := range out {
			out[i] = &qhinv1.PatientLink{ParticipantId: "p2", PatientId: patient}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		msg   proto.Message
		field string // "" when the message is within the limits
		rule  string
	}{
		{name: "within every limit", msg: &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TREAT", Requester: &qhinv1.Requester{Id: "12345678", Name: long(16)},
			Links: links(3, "mrn-1"), TypeCodes: []string{"a", "b"}, Since: timestamppb.New(timestamppb.Now().AsTime())}},
		{name: "nil", msg: nil},
		{name: "an id over IDBytes", msg: &qhinv1.Requester{Id: long(9)}, field: "id", rule: "must be at most 8 bytes"},
		{name: "a purpose over IDBytes", msg: &qhinv1.DiscoverPatientsRequest{PurposeOfUse: long(9)}, field: "purpose_of_use", rule: "at most 8 bytes"},
		{name: "text over TextBytes", msg: &qhinv1.Requester{Name: long(17)}, field: "name", rule: "must be at most 16 bytes"},
		{name: "nested text", msg: &qhinv1.DiscoverPatientsRequest{Demographics: &qhinv1.Demographics{Address: &qhinv1.Address{City: long(17)}}},
			field: "demographics.address.city", rule: "at most 16 bytes"},
		{name: "an item of a repeated string", msg: &qhinv1.DiscoverPatientsRequest{Demographics: &qhinv1.Demographics{Address: &qhinv1.Address{Lines: []string{"a", long(17)}}}},
			field: "demographics.address.lines[1]", rule: "at most 16 bytes"},
		{name: "too many address lines", msg: &qhinv1.Address{Lines: []string{"a", "b", "c"}}, field: "lines", rule: "must hold at most 2 items"},
		{name: "too many identifiers", msg: &qhinv1.Demographics{Identifiers: make([]*qhinv1.Identifier, 3)}, field: "identifiers", rule: "at most 2 items"},
		{name: "a field of a repeated message", msg: &qhinv1.QueryDocumentsRequest{Links: append(links(2, "ok"), &qhinv1.PatientLink{PatientId: long(9)})},
			field: "links[2].patient_id", rule: "at most 8 bytes"},
		{name: "links take Links, not ListItems", msg: &qhinv1.QueryDocumentsRequest{Links: links(3, "ok")}},
		{name: "too many links, checked before any link", msg: &qhinv1.QueryDocumentsRequest{Links: links(4, long(100))}, field: "links", rule: "at most 3 items"},
		{name: "too many patient ids", msg: &qhinv1.ResponderQueryDocumentsRequest{PatientIds: []string{"a", "b", "c", "d"}}, field: "patient_ids", rule: "at most 3 items"},
		{name: "a patient id is an id", msg: &qhinv1.ResponderQueryDocumentsRequest{PatientIds: []string{long(9)}}, field: "patient_ids[0]", rule: "at most 8 bytes"},
		{name: "a digest is an id", msg: &qhinv1.DocumentMetadata{Sha256: long(9)}, field: "sha256", rule: "at most 8 bytes"},
		{name: "a timestamp out of range", msg: &qhinv1.QueryDocumentsRequest{Until: &timestamppb.Timestamp{Seconds: -1e18}}, field: "until", rule: "valid timestamp"},
		{name: "a timestamp with bad nanos", msg: &qhinv1.DocumentMetadata{Created: &timestamppb.Timestamp{Nanos: -1}}, field: "created", rule: "valid timestamp"},
		{name: "a duration out of range", msg: &qhinv1.ResponderStatus{Latency: &durationpb.Duration{Seconds: 1e18}}, field: "latency", rule: "valid duration"},
		{name: "the first bad field in field order", msg: &qhinv1.DiscoverPatientsRequest{PurposeOfUse: long(9), Requester: &qhinv1.Requester{Id: long(9)}},
			field: "purpose_of_use", rule: "at most 8 bytes"},
		{name: "a oneof", msg: &qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Header{Header: &qhinv1.DocumentMetadata{Title: long(17)}}},
			field: "header.title", rule: "at most 16 bytes"},
		{name: "bytes are not capped here", msg: &qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Chunk{Chunk: make([]byte, 1000)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.msg, small)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check: %v, want nil", err)
				}
				return
			}
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("Check: %v, want an *Error", err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Rule, tc.rule) {
				t.Errorf("Check: %q, want field %q with a rule saying %q", err, tc.field, tc.rule)
			}
			if strings.Contains(err.Error(), "ZZ") {
				t.Errorf("the error %q holds the value", err)
			}
		})
	}
}

func TestCheck_DefaultsTakeZeroFields(t *testing.T) {
	if err := Check(&qhinv1.Requester{Id: strings.Repeat("a", DefaultIDBytes)}, Limits{}); err != nil {
		t.Errorf("an id of %d bytes: %v", DefaultIDBytes, err)
	}
	if err := Check(&qhinv1.Requester{Id: strings.Repeat("a", DefaultIDBytes+1)}, Limits{}); err == nil {
		t.Errorf("an id of %d bytes passed", DefaultIDBytes+1)
	}
	if err := Check(&qhinv1.QueryDocumentsRequest{Links: make([]*qhinv1.PatientLink, DefaultLinks+1)}, Limits{}); err == nil {
		t.Errorf("%d links passed", DefaultLinks+1)
	}
}

func BenchmarkCheck_1000Links(b *testing.B) {
	req := &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TREAT", Requester: &qhinv1.Requester{Id: "npi"}}
	for range DefaultLinks {
		req.Links = append(req.Links, &qhinv1.PatientLink{ParticipantId: "p2", PatientId: "p2-000042"})
	}
	for b.Loop() {
		if err := Check(req, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
