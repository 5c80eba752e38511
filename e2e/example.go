package e2e

import (
	"errors"

	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var errFound = errors.New("found")

// examplePerson returns the demographics of a patient of holder whom other's
// matcher finds too, so that a query by a third member shows one merged
// person with a link at each. Failing that (or with no other), holder's
// first patient; nil when holder has none. It looks at holder's first 5,000
// patients at most.
func examplePerson(holder, other *store.Store) (*qhinv1.Demographics, error) {
	var index *match.Index
	if other != nil {
		index = match.NewIndex()
		if err := other.ForEachPatient(func(p store.Patient) error {
			index.Add(p.ID, match.Normalize(p.Demographics))
			return nil
		}); err != nil {
			return nil, err
		}
	}
	var first, shared *qhinv1.Demographics
	seen := 0
	err := holder.ForEachPatient(func(p store.Patient) error {
		if first == nil {
			first = p.Demographics
		}
		if index != nil && len(index.Search(match.Normalize(p.Demographics), match.DefaultThreshold, 1)) > 0 {
			shared = p.Demographics
			return errFound
		}
		if seen++; seen >= 5000 {
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, err
	}
	if shared != nil {
		return shared, nil
	}
	return first, nil
}
