package bench

import (
	"context"
	"fmt"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The brokers take only the links they issued: a document query takes the
// patient links of a discovery answer, a retrieval the document link of a
// document query answer, each bound to the member that asked, the purpose
// and an expiry. A scenario that retrieves through the brokers gets its
// link the way a member does, before it measures anything.

// patientLinks discovers d through gw and returns the links the brokers
// issued to member's records of the persons found.
func patientLinks(ctx context.Context, gw qhinv1.GatewayClient, d *qhinv1.Demographics, member string) ([]string, error) {
	resp, err := gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Demographics: d})
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	var out []string
	for _, p := range resp.Persons {
		for _, l := range p.Links {
			if l.ParticipantId == member && l.Link != "" {
				out = append(out, l.Link)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("discover: %d persons found, none with a link to a record of member %s", len(resp.Persons), member)
	}
	return out, nil
}

// documentLink discovers d through gw, lists the documents of member's
// records of the persons found, and returns the link the brokers issued to
// document docID.
func documentLink(ctx context.Context, gw qhinv1.GatewayClient, d *qhinv1.Demographics, member, docID string) (string, error) {
	pl, err := patientLinks(ctx, gw, d, member)
	if err != nil {
		return "", err
	}
	req := &qhinv1.QueryDocumentsRequest{PurposeOfUse: purposeOfUse, Requester: requester()}
	for _, l := range pl {
		req.Links = append(req.Links, &qhinv1.PatientLink{Link: l})
	}
	resp, err := gw.QueryDocuments(ctx, req)
	if err != nil {
		return "", fmt.Errorf("query documents: %w", err)
	}
	for _, doc := range resp.Documents {
		if doc.Id == docID && doc.SourceParticipantId == member && doc.Link != "" {
			return doc.Link, nil
		}
	}
	return "", fmt.Errorf("query documents: %d documents listed, none is document %s of member %s with a link", len(resp.Documents), docID, member)
}
