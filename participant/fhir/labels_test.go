package fhir

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestImportBundle_SecurityLabels reads DocumentReference.meta.security and
// securityLabel into the stored document's labels, and refuses a bad code
// without echoing it.
func TestImportBundle_SecurityLabels(t *testing.T) {
	v3 := "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	conf := "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
	for _, tc := range []struct {
		name    string
		set     func(doc obj)
		want    []string
		wantErr string
	}{
		{"none", func(obj) {}, nil, ""},
		{"meta.security", func(d obj) {
			d["meta"] = obj{"security": []any{obj{"system": v3, "code": "ETH"}, obj{"system": conf, "code": "R"}}}
		}, []string{"ETH", "R"}, ""},
		{"securityLabel, and both at once, each code once", func(d obj) {
			d["meta"] = obj{"security": []any{obj{"system": conf, "code": "R"}}}
			d["securityLabel"] = []any{obj{"coding": []any{obj{"system": v3, "code": "HIV"}, obj{"system": conf, "code": "R"}}}}
		}, []string{"R", "HIV"}, ""},
		{"bad code", func(d obj) {
			d["meta"] = obj{"security": []any{obj{"system": v3, "code": "SECRET VALUE"}}}
		}, nil, "security label 1: code must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			im := &Importer{Sink: s, ParticipantID: participantID}
			b := fixtureBundle()
			tc.set(entryOf(t, b, "DocumentReference", 0))
			res, err := im.ImportFiles(context.Background(), []string{writeFile(t, t.TempDir(), "b.json", marshal(t, b))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Reason, tc.wantErr) || strings.Contains(res.Skipped[0].Reason, "SECRET") {
					t.Fatalf("skipped = %+v, want one naming %q without the value", res.Skipped, tc.wantErr)
				}
				return
			}
			m, err := s.Document("docref-inline")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(m.SecurityLabels, tc.want) {
				t.Errorf("labels = %v, want %v", m.SecurityLabels, tc.want)
			}
		})
	}
}
