package broker

import (
	"fmt"
	"sync"

	"github.com/openqhin/openqhin/broker/fanout"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/broker/purpose"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// route decides which members a discovery query goes to: every active member
// but the initiator that answers the purpose. Suspended members and members
// that do not answer the purpose are reported as skipped; retired members are
// not mentioned.
func route(directory []*qhinv1.Participant, initiator, purposeCode string) (ask []*qhinv1.Participant, skipped []*qhinv1.ResponderStatus) {
	for _, p := range directory {
		if p.Id == initiator {
			continue
		}
		if reason, ok := askable(p, purposeCode); !ok {
			if p.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED {
				skipped = append(skipped, notAsked(p, purposeCode, reason))
			}
			continue
		}
		ask = append(ask, p)
	}
	return ask, skipped
}

// askable reports whether a member may be asked a query of the purpose, and
// why not.
func askable(p *qhinv1.Participant, purposeCode string) (string, bool) {
	switch p.Status {
	case qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE:
	case qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED:
		return "member is suspended", false
	default:
		return "member is not active", false
	}
	if !purpose.Permits(p.RespondPurposes, purposeCode) {
		return fmt.Sprintf("member does not answer %s", purposeCode), false
	}
	return "", true
}

// routeLinks groups a document query's links by member and decides which of
// those members may be asked, in the order the links first name them. Only
// the members asked get a patient list; each patient is listed once.
func routeLinks(directory map[string]*qhinv1.Participant, links []*qhinv1.PatientLink, purposeCode string) (ask []*qhinv1.Participant, patients map[string][]string, skipped []*qhinv1.ResponderStatus) {
	patients = map[string][]string{}
	// asked says, for each member the links name, whether it is asked.
	asked := map[string]bool{}
	type pair struct{ member, patient string }
	seenPatient := map[pair]bool{}
	for _, l := range links {
		id := l.ParticipantId
		ok, seen := asked[id]
		if !seen {
			p, member := directory[id]
			switch {
			case !member:
				skipped = append(skipped, fanout.Skipped(id, "not a member of the network"))
			default:
				if reason, can := askable(p, purposeCode); !can {
					skipped = append(skipped, notAsked(p, purposeCode, reason))
				} else {
					ask, ok = append(ask, p), true
				}
			}
			asked[id] = ok
		}
		if k := (pair{id, l.PatientId}); ok && !seenPatient[k] {
			seenPatient[k] = true
			patients[id] = append(patients[id], l.PatientId)
		}
	}
	return ask, patients, skipped
}

// routingTable keeps the directory's members that are not retired in
// memory, so that a query does not read the whole directory from disk. It
// reloads when the directory's version moves.
type routingTable struct {
	mu      sync.Mutex
	loaded  bool
	version uint64
	members []*qhinv1.Participant
	byID    map[string]*qhinv1.Participant
	// onReload, when set, is told the members after each reload.
	onReload func([]*qhinv1.Participant)
}

// get returns the members, in id order, and an index of them. Callers must
// not modify them.
func (r *routingTable) get(f *fsm.FSM) ([]*qhinv1.Participant, map[string]*qhinv1.Participant, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := f.DirectoryVersion()
	if r.loaded && v == r.version {
		return r.members, r.byID, nil
	}
	all, err := f.Participants(qhinv1.ParticipantStatus_PARTICIPANT_STATUS_UNSPECIFIED)
	if err != nil {
		return nil, nil, err
	}
	members := all[:0]
	for _, p := range all {
		if p.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED {
			members = append(members, p)
		}
	}
	r.members, r.byID, r.version, r.loaded = members, index(members), v, true
	if r.onReload != nil {
		r.onReload(members)
	}
	return r.members, r.byID, nil
}
