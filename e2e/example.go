package e2e

import (
	"errors"

	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var errFound = errors.New("found")

// ExamplePerson returns the demographics of a patient of the first
// participant whom the second participant also holds, so that a discovery
// query for them shows a merged person; failing that, any patient of the
// first participant. It returns nil when the first participant holds nobody.
func (n *Network) ExamplePerson() *qhinv1.Demographics {
	if len(n.Participants) == 0 || n.Participants[0].Server == nil {
		return nil
	}
	var first, shared *qhinv1.Demographics
	seen := 0
	n.Participants[0].Server.Store().ForEachPatient(func(p store.Patient) error {
		if first == nil {
			first = p.Demographics
		}
		if len(n.Participants) > 1 && n.Participants[1].Server != nil && len(n.Participants[1].Server.Search(p.Demographics)) > 0 {
			shared = p.Demographics
			return errFound
		}
		if seen++; seen > 5000 {
			return errFound
		}
		return nil
	})
	if shared != nil {
		return shared
	}
	return first
}
