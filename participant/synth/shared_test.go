package synth

import (
	"testing"
)

func TestSharedPerson_HeldUnchangedByEveryMember(t *testing.T) {
	opts := Options{Seed: 1, Persons: 500, Participants: []string{"p1", "p2", "p3"}}
	regs, err := SharedPerson(opts, "p2", "p3")
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) != 2 || regs[0].ParticipantID != "p2" || regs[1].ParticipantID != "p3" || regs[0].PersonID != regs[1].PersonID {
		t.Fatalf("registrations %+v", regs)
	}
	// The same person, unchanged, as Generate makes it at both members;
	// and no earlier person qualifies.
	held := map[string]map[string]Registration{}
	var order []string
	Generate(opts, func(r Registration) error {
		if held[r.PersonID] == nil {
			held[r.PersonID] = map[string]Registration{}
			order = append(order, r.PersonID)
		}
		held[r.PersonID][r.ParticipantID] = r
		return nil
	})
	for _, id := range order {
		a, okA := held[id]["p2"]
		b, okB := held[id]["p3"]
		qualifies := okA && okB && a.Variations == 0 && b.Variations == 0
		if id == regs[0].PersonID {
			if !qualifies || a.PatientID != regs[0].PatientID || b.PatientID != regs[1].PatientID {
				t.Fatalf("SharedPerson returned %s, which Generate does not hold unchanged at p2 and p3", id)
			}
			break
		}
		if qualifies {
			t.Fatalf("person %s comes first and is held unchanged at p2 and p3; SharedPerson returned %s", id, regs[0].PersonID)
		}
	}
	t.Logf("%s: %v / %v", regs[0].PersonID, regs[0].PatientID, regs[1].PatientID)
}

func TestSharedPerson_NoneFound(t *testing.T) {
	if _, err := SharedPerson(Options{Seed: 1, Persons: 20, Participants: []string{"p1"}}, "p1", "p2"); err == nil {
		t.Error("found a person at a member of another population")
	}
	if _, err := SharedPerson(Options{Seed: 1, Persons: 20, Participants: []string{"p1"}}); err == nil {
		t.Error("no members accepted")
	}
}
