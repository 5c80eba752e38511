package e2e

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// zebulon's demographics are distinctive, so that finding any of them in a
// log or an error message cannot be a coincidence.
var zebulon = &qhinv1.Demographics{
	Given: "Zebulon", Family: "Quackenbush", BirthDate: "1953-11-29", Gender: "male",
	Address: &qhinv1.Address{Lines: []string{"77 Quillfeather Lane"}, City: "Marblehead", State: "MA", PostalCode: "01945-3321", Country: "US"},
	Phone:   "781-555-0147",
}

const zebulonMRN = "ZQ-MRN-4471"

// zebulonPHI is everything about zebulon that must never reach a log or an
// error message.
var zebulonPHI = []string{"Zebulon", "Quackenbush", "1953-11-29", "Quillfeather", "Marblehead", "01945-3321", "781-555-0147", zebulonMRN}

func TestGateway_BadInputIsRejectedNamingTheFieldWithoutPHI(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 2})
	if err := n.Participants[1].Server.PutPatient(context.Background(), zebulonMRN, zebulon); err != nil {
		t.Fatal(err)
	}
	putDoc(t, n, 1, zebulonMRN, "p2-doc-zq", "34133-9", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), "a note")
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()

	demo := func(change func(d *qhinv1.Demographics)) *qhinv1.Demographics {
		d := proto.Clone(zebulon).(*qhinv1.Demographics)
		change(d)
		return d
	}
	discover := func(purpose string, r *qhinv1.Requester, d *qhinv1.Demographics) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purpose, Requester: r, Demographics: d})
			return err
		}
	}
	documents := func(links ...*qhinv1.PatientLink) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: links})
			return err
		}
	}
	retrieve := func(link *qhinv1.DocumentLink) func(context.Context) error {
		return func(ctx context.Context) error {
			s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Link: link})
			if err != nil {
				return err
			}
			for {
				if _, err := s.Recv(); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
			}
		}
	}
	future := time.Now().AddDate(1, 0, 0).Format(time.DateOnly)
	zqLink := discoverLinks(t, gw, "T-TRTMNT", zebulon)["p2"]
	zq := &qhinv1.PatientLink{Link: zqLink}
	zqDoc := documentLinks(t, gw, "T-TRTMNT", zqLink)["p2-doc-zq"]

	for _, tc := range []struct {
		name string
		call func(context.Context) error
		code codes.Code
		// field is what the status message must name.
		field string
		// phi are values of this row that must not appear, besides
		// zebulonPHI.
		phi []string
	}{
		// Controls: the well-formed requests succeed, so the log check
		// below also covers a query that reached the members.
		{name: "well-formed discovery", call: func(ctx context.Context) error {
			resp, err := gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: zebulon})
			if err == nil && len(resp.Persons) != 1 {
				t.Errorf("well-formed discovery found %d persons, want zebulon at p2", len(resp.Persons))
			}
			return err
		}, code: codes.OK},
		{name: "well-formed document query", call: documents(zq), code: codes.OK},
		{name: "well-formed retrieval", call: retrieve(&qhinv1.DocumentLink{Link: zqDoc}), code: codes.OK},

		{name: "no demographics", call: discover("T-TRTMNT", requester(), nil), code: codes.InvalidArgument, field: "demographics"},
		{name: "no given name", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.Given = "" })), code: codes.InvalidArgument, field: "demographics.given"},
		{name: "no family name", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.Family = "" })), code: codes.InvalidArgument, field: "demographics.family"},
		{name: "no birth date", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.BirthDate = "" })), code: codes.InvalidArgument, field: "demographics.birth_date"},
		{name: "no gender", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.Gender = "" })), code: codes.InvalidArgument, field: "demographics.gender"},
		{name: "birth date day first", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.BirthDate = "29/11/1953" })), code: codes.InvalidArgument, field: "demographics.birth_date", phi: []string{"29/11/1953"}},
		{name: "birth date not on the calendar", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.BirthDate = "1953-02-30" })), code: codes.InvalidArgument, field: "demographics.birth_date", phi: []string{"1953-02-30"}},
		{name: "birth date in the future", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.BirthDate = future })), code: codes.InvalidArgument, field: "demographics.birth_date", phi: []string{future}},
		{name: "unknown gender", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.Gender = "M" })), code: codes.InvalidArgument, field: "demographics.gender"},
		{name: "malformed ZIP code", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.Address.PostalCode = "01945-33" })), code: codes.InvalidArgument, field: "demographics.address.postal_code", phi: []string{"01945-33"}},
		{name: "malformed phone", call: discover("T-TRTMNT", requester(), demo(func(d *qhinv1.Demographics) { d.Phone = "781-555-ZEBU" })), code: codes.InvalidArgument, field: "demographics.phone", phi: []string{"ZEBU"}},
		{name: "no purpose", call: discover("", requester(), zebulon), code: codes.InvalidArgument, field: "purpose_of_use"},
		{name: "unknown purpose", call: discover("T-NOPE", requester(), zebulon), code: codes.InvalidArgument, field: "purpose_of_use"},
		{name: "push-only purpose", call: discover("T-PH-ECR", requester(), zebulon), code: codes.InvalidArgument, field: "purpose_of_use"},
		{name: "no requester", call: discover("T-TRTMNT", nil, zebulon), code: codes.InvalidArgument, field: "requester"},
		{name: "requester without id", call: discover("T-TRTMNT", &qhinv1.Requester{Name: "Dr. Test"}, zebulon), code: codes.InvalidArgument, field: "requester.id"},

		{name: "document query without links", call: documents(), code: codes.InvalidArgument, field: "links"},
		{name: "document link by member and patient id, not issued", call: documents(&qhinv1.PatientLink{ParticipantId: "p2", PatientId: zebulonMRN}), code: codes.InvalidArgument, field: "links[0].link"},
		{name: "document link made up", call: documents(&qhinv1.PatientLink{Link: "q1." + zebulonMRN}), code: codes.InvalidArgument, field: "links[0].link"},
		{name: "second document link not issued", call: documents(zq, &qhinv1.PatientLink{ParticipantId: "p2"}), code: codes.InvalidArgument, field: "links[1].link"},
		{name: "document link where a patient link goes", call: documents(&qhinv1.PatientLink{Link: zqDoc}), code: codes.InvalidArgument, field: "links[0].link"},
		{name: "document query since after until", call: func(ctx context.Context) error {
			_, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{
				PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{zq},
				Since: timestamppb.New(time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)), Until: timestamppb.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)),
			})
			return err
		}, code: codes.InvalidArgument, field: "since"},

		{name: "retrieval without link", call: retrieve(nil), code: codes.InvalidArgument, field: "link.link"},
		{name: "retrieval with empty link", call: retrieve(&qhinv1.DocumentLink{}), code: codes.InvalidArgument, field: "link.link"},
		{name: "retrieval by member and document id, not issued", call: retrieve(&qhinv1.DocumentLink{ParticipantId: "p2", DocumentId: "p2-doc-zq"}), code: codes.InvalidArgument, field: "link.link"},
		{name: "retrieval with a patient link", call: retrieve(&qhinv1.DocumentLink{Link: zqLink}), code: codes.InvalidArgument, field: "link.link"},
		{name: "retrieval with a made-up link", call: retrieve(&qhinv1.DocumentLink{Link: "q1.AAAA" + zebulonMRN}), code: codes.InvalidArgument, field: "link.link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(callCtx(t))
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %q", msg, tc.field)
			}
			for _, phi := range append(tc.phi, zebulonPHI...) {
				if strings.Contains(msg, phi) {
					t.Errorf("message %q contains patient data %q", msg, phi)
				}
			}
			for _, phi := range tc.phi {
				if containsValue(logs.String(), phi) {
					t.Errorf("logs contain patient data %q", phi)
				}
			}
		})
	}

	if !strings.Contains(logs.String(), "InvalidArgument") {
		t.Fatal("the network logged no rejected call: the log check below would be vacuous")
	}
	for _, phi := range zebulonPHI {
		if containsValue(logs.String(), phi) {
			t.Errorf("logs contain patient data %q", phi)
		}
	}
}
