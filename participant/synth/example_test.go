package synth_test

import (
	"fmt"

	"github.com/openqhin/openqhin/participant/synth"
)

func ExampleGenerate() {
	perMember := map[string]int{}
	persons := map[string]bool{}
	err := synth.Generate(synth.Options{
		Seed:         42,
		Persons:      1000,
		Participants: []string{"p1", "p2", "p3"},
		MaxDocuments: -1,
	}, func(r synth.Registration) error {
		perMember[r.ParticipantID]++
		persons[r.PersonID] = true
		return nil
	})
	fmt.Println(len(persons), perMember["p1"]+perMember["p2"]+perMember["p3"] > 1000, err)
	// Output: 1000 true <nil>
}
