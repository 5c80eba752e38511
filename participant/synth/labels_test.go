package synth

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGenerate_LabelsAFewBehavioralHealthNotes: only behavioral health
// notes about an F-chapter disorder carry PSY, and they are a few, not
// none.
func TestGenerate_LabelsAFewBehavioralHealthNotes(t *testing.T) {
	opts := Options{Seed: 8, Persons: 2000, Participants: three, Now: time.Date(2020, 3, 1, 9, 30, 0, 0, time.UTC)}
	var docs, labelled int
	for _, r := range collect(t, opts) {
		for _, d := range r.Documents {
			docs++
			if len(d.Meta.SecurityLabels) == 0 {
				continue
			}
			labelled++
			if !slices.Equal(d.Meta.SecurityLabels, []string{"PSY"}) || !strings.HasSuffix(d.Meta.Title, "Behavioral Health") {
				t.Fatalf("%s: labels %v on %q", d.Meta.Id, d.Meta.SecurityLabels, d.Meta.Title)
			}
		}
	}
	if labelled == 0 || labelled*20 > docs {
		t.Errorf("%d of %d documents labelled; want a few (more than none, under 5%%)", labelled, docs)
	}
	t.Logf("%d of %d documents labelled PSY", labelled, docs)
}
