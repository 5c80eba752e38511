package broker

import (
	"fmt"
	"sync"

	"github.com/openqhin/openqhin/broker/fanout"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/broker/purpose"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Routing says how a broker chooses the members a discovery query goes to.
type Routing string

// Routing modes (qhin-broker --routing).
const (
	// RoutingTargetedThenBroadcast asks the members the record locator
	// lists for the query's tokens; when it lists none (or the query
	// carries no tokens), every member.
	RoutingTargetedThenBroadcast Routing = "targeted-then-broadcast"
	// RoutingTargetedOnly asks the members the locator lists, and nobody
	// when it lists none.
	RoutingTargetedOnly Routing = "targeted-only"
	// RoutingBroadcast asks every member, whatever the locator holds.
	RoutingBroadcast Routing = "broadcast"
)

// DefaultRouting is the routing of a broker not told otherwise.
const DefaultRouting = RoutingTargetedThenBroadcast

// ParseRouting reads a routing mode.
func ParseRouting(s string) (Routing, error) {
	switch r := Routing(s); r {
	case RoutingTargetedThenBroadcast, RoutingTargetedOnly, RoutingBroadcast:
		return r, nil
	}
	return "", fmt.Errorf("routing must be %s, %s or %s", RoutingTargetedThenBroadcast, RoutingTargetedOnly, RoutingBroadcast)
}

// Routing decisions, as metrics and logs name them.
const (
	decisionTargeted  = "targeted"
	decisionFallback  = "fallback"
	decisionNone      = "none"
	decisionBroadcast = "broadcast"
)

// NoLocatorHit is the detail of a member a targeted query did not ask.
const NoLocatorHit = "no record-locator hit"

// route decides which members a discovery query goes to. The candidates
// are the active members but the initiator that answer the purpose;
// suspended members and members that do not answer the purpose are
// reported as skipped, retired members are not mentioned. holders are the
// members the record locator lists for the query's tokens (nil when the
// query carried none): unless mode is broadcast, a query goes to the
// candidates among them, and the other candidates are skipped with
// NoLocatorHit. When no candidate is a holder, targeted-then-broadcast asks
// every candidate and targeted-only nobody. decision names what was done.
func route(directory []*qhinv1.Participant, initiator, purposeCode string, mode Routing, holders map[string]bool) (ask []*qhinv1.Participant, skipped []*qhinv1.ResponderStatus, decision string) {
	var candidates []*qhinv1.Participant
	hits := 0
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
		candidates = append(candidates, p)
		if holders[p.Id] {
			hits++
		}
	}
	switch {
	case mode == RoutingBroadcast:
		return candidates, skipped, decisionBroadcast
	case hits == 0 && mode == RoutingTargetedOnly:
		for _, p := range candidates {
			skipped = append(skipped, fanout.Skipped(p.Id, NoLocatorHit))
		}
		return nil, skipped, decisionNone
	case hits == 0:
		return candidates, skipped, decisionFallback
	}
	ask = make([]*qhinv1.Participant, 0, hits)
	for _, p := range candidates {
		if holders[p.Id] {
			ask = append(ask, p)
		} else {
			skipped = append(skipped, fanout.Skipped(p.Id, NoLocatorHit))
		}
	}
	return ask, skipped, decisionTargeted
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
