package facade

import (
	"encoding/json"
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestDocumentOf_SecurityLabels renders a document's labels as
// DocumentReference.securityLabel, each in its HL7 v3 code system.
func TestDocumentOf_SecurityLabels(t *testing.T) {
	b, err := json.Marshal(documentOf("d1", &qhinv1.DocumentMetadata{Title: "t", SecurityLabels: []string{"R", "ETH"}}, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	want := `"securityLabel":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},` +
		`{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"ETH"}]}]`
	if !strings.Contains(string(b), want) {
		t.Errorf("DocumentReference = %s\nwant it to hold %s", b, want)
	}
	if b, _ := json.Marshal(documentOf("d2", &qhinv1.DocumentMetadata{}, "", "")); strings.Contains(string(b), "securityLabel") {
		t.Errorf("an unlabelled document has a securityLabel: %s", b)
	}
}
