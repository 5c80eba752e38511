package upstream

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestDocRef_SecurityLabels reads an upstream DocumentReference's
// meta.security and securityLabel codes into the metadata's labels, each
// once: a member's policy then withholds what it does not allow.
func TestDocRef_SecurityLabels(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		want       []string
	}{
		{"none", `{"resourceType":"DocumentReference","id":"d1","content":[{"attachment":{}}]}`, nil},
		{"both", `{"resourceType":"DocumentReference","id":"d1","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},
			"securityLabel":[{"coding":[{"code":"ETH"},{"code":"R"}]}],"content":[{"attachment":{}}]}`, []string{"R", "ETH"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d docRef
			if err := json.Unmarshal([]byte(tc.json), &d); err != nil {
				t.Fatal(err)
			}
			m, ok := d.metadata("p1")
			if !ok {
				t.Fatal("not a document")
			}
			if !slices.Equal(m.SecurityLabels, tc.want) {
				t.Errorf("labels = %v, want %v", m.SecurityLabels, tc.want)
			}
		})
	}
}
