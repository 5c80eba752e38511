package e2e

import (
	"errors"

	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var errFound = errors.New("found")

// ExamplePerson returns the demographics of a patient whom a query by the
// first participant finds at two other members, so that the answer shows a
// merged person: a patient of the second participant whom the third also
// holds. Failing that, any patient of the second participant (or of the
// first, in a network of one). It returns nil when there is nobody.
func (n *Network) ExamplePerson() *qhinv1.Demographics {
	var holder, other *ParticipantNode
	switch {
	case len(n.Participants) >= 3:
		holder, other = n.Participants[1], n.Participants[2]
	case len(n.Participants) == 2:
		holder = n.Participants[1]
	case len(n.Participants) == 1:
		holder = n.Participants[0]
	default:
		return nil
	}
	if holder.Server == nil {
		return nil
	}
	var first, shared *qhinv1.Demographics
	seen := 0
	holder.Server.Store().ForEachPatient(func(p store.Patient) error {
		if first == nil {
			first = p.Demographics
		}
		if other != nil && other.Server != nil && len(other.Server.Search(p.Demographics)) > 0 {
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
