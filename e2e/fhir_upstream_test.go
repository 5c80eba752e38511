package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/openqhin/openqhin/participant/upstream"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestFHIR_UpstreamMode restarts p2 in upstream mode, answering the network
// from a FHIR server instead of its store: p3's facade (its /local base,
// over real HTTPS). A discovery by p1 then finds p3's records at p2 too, and
// p1 lists and retrieves a document through p2's link, its SHA-256 checked
// by the broker against what p2 read from the upstream.
func TestFHIR_UpstreamMode(t *testing.T) {
	n, logs := startNetwork(t, Options{Participants: 3, FHIR: true})
	if _, err := n.SeedSynthetic(callCtx(t), 200, 1, nil); err != nil {
		t.Fatal(err)
	}
	d, err := examplePerson(n.Participants[1].Server.Store(), n.Participants[2].Server.Store())
	if err != nil || d == nil {
		t.Fatalf("example person: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(n.CA.Certificate())
	up, err := upstream.New(upstream.Config{URL: n.Participants[2].FHIRURL + "/local", SpoolDir: t.TempDir(),
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}})
	if err != nil {
		t.Fatal(err)
	}
	n.KillParticipant(1)
	n.Participants[1].Upstream = up
	if err := n.StartParticipant(1); err != nil {
		t.Fatal(err)
	}

	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	var found *qhinv1.DiscoverPatientsResponse
	pollUntil(t, 30*time.Second, "p2 answers from its upstream", func() error {
		found, err = gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TREAT", Requester: requester(), Demographics: d})
		if err != nil {
			return err
		}
		if len(found.Persons) != 1 || !linksAt(found.Persons[0], "p2", "p3") {
			return errors.New("want one person linked at p2 and p3")
		}
		return nil
	})
	var atP2, atP3, linkP2 string
	for _, l := range found.Persons[0].Links {
		switch l.ParticipantId {
		case "p2":
			atP2, linkP2 = l.PatientId, l.Link
		case "p3":
			atP3 = l.PatientId
		}
	}
	if atP2 != atP3 {
		t.Fatalf("p2's link names patient %q, p3's %q: p2 did not answer from p3's records", atP2, atP3)
	}

	docs, err := gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TREAT", Requester: requester(),
		Links: []*qhinv1.PatientLink{{Link: linkP2}}})
	if err != nil || len(docs.Documents) == 0 {
		t.Fatalf("documents through p2's upstream: %v, %v", docs, err)
	}
	for _, m := range docs.Documents {
		if m.SourceParticipantId != "p2" || m.Sha256 == "" || m.Size <= 0 {
			t.Fatalf("document listed through the upstream: %v", m)
		}
		stream, err := gw.RetrieveDocument(callCtx(t), &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TREAT", Requester: requester(),
			Link: &qhinv1.DocumentLink{Link: m.Link}})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		var header *qhinv1.DocumentMetadata
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("retrieve %s through p2's upstream: %v", m.Id, err)
			}
			if hd := msg.GetHeader(); hd != nil {
				header = hd
			}
			h.Write(msg.GetChunk())
		}
		if header == nil || hex.EncodeToString(h.Sum(nil)) != m.Sha256 {
			t.Fatalf("retrieved %s: header %v, sha256 %x, listed %s", m.Id, header, h.Sum(nil), m.Sha256)
		}
	}

	// The live feed refuses writes in upstream mode: the records live
	// upstream.
	ehr := newFHIREHR(t, n, 1)
	ehr.do("PUT", "/Patient/x1", []byte(`{"resourceType":"Patient","id":"x1","birthDate":"1970-01-01"}`)).want(t, "write in upstream mode", 405, "upstream FHIR server")
	for _, phi := range []string{d.Family, d.BirthDate} {
		if containsValue(logs.String(), phi) {
			t.Errorf("the logs hold %q", phi)
		}
	}
}
