package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// DefaultMaxLocatorTokensPerMember caps the tokens one member may hold in
// the locator: about 20 million patients at five tokens each.
const DefaultMaxLocatorTokensPerMember = 100_000_000

// locator serves the Locator service: members publish and withdraw their
// patients' tokens, operators manage the linkage keys. A member acts for
// itself only: the participant its certificate names.
type locator struct {
	qhinv1.UnimplementedLocatorServer
	s *Server
}

// keyIDRule is what a linkage key id must look like, in the words errors
// use.
var keyIDRule = fmt.Sprintf("must be %d lowercase hex digits: the id of one of the network's linkage keys", fsm.KeyIDLen)

// tokenRule is what a token must look like.
var tokenRule = fmt.Sprintf("must be %d bytes: an HMAC-SHA256 under the linkage key, truncated", fsm.TokenSize)

// member checks the calling participant before a publish or withdrawal: it
// acts for itself (participant_id empty or its own), is in the directory
// under its certificate's SPIFFE ID and, to publish, not retired.
func (l *locator) member(ctx context.Context, claimed string, publish bool) (*qhinv1.Participant, error) {
	if err := l.s.node.AwaitServing(ctx); err != nil {
		return nil, toStatus(err)
	}
	id, ok := pki.IdentityFromContext(ctx)
	if !ok || id.Role != pki.RoleParticipant {
		return nil, status.Error(codes.PermissionDenied, "only participants publish tokens")
	}
	if claimed != "" && claimed != id.Name {
		return nil, status.Errorf(codes.PermissionDenied,
			"participant_id: a member publishes and withdraws only its own tokens (its certificate names %s)", id.Name)
	}
	p, err := l.s.node.FSM().Participant(id.Name)
	if errors.Is(err, fsm.ErrNotFound) {
		return nil, status.Errorf(codes.PermissionDenied, "participant %s is not in the directory", id.Name)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if p.SpiffeId != id.ID.String() {
		return nil, status.Errorf(codes.PermissionDenied, "participant %s is registered with another identity", id.Name)
	}
	if publish && p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED {
		return nil, status.Errorf(codes.PermissionDenied, "participant %s is retired", id.Name)
	}
	return p, nil
}

// checkTokens checks a publish or withdrawal's key id and tokens, every
// size before any other work, and that the network knows the key (and,
// to publish, that it is active).
func (l *locator) checkTokens(ctx context.Context, keyID string, tokens [][]byte, requestID string, publish bool) error {
	if len(tokens) == 0 {
		return invalid("tokens", "at least one token is required")
	}
	if len(tokens) > fsm.MaxLocatorTokens {
		return invalid("tokens", fmt.Sprintf("at most %d tokens per call", fsm.MaxLocatorTokens))
	}
	if len(requestID) > l.s.limits.Fields.IDBytes {
		return invalid("request_id", fmt.Sprintf("must be at most %d bytes", l.s.limits.Fields.IDBytes))
	}
	if !fsm.ValidKeyID(keyID) {
		return invalid("key_id", keyIDRule)
	}
	for i, t := range tokens {
		if len(t) != fsm.TokenSize {
			return invalid(fmt.Sprintf("tokens[%d]", i), tokenRule)
		}
	}
	k, err := l.linkageKey(ctx, keyID, publish)
	if errors.Is(err, fsm.ErrNotFound) {
		return invalid("key_id", "not a linkage key of the network (qhinctl locator status lists them)")
	}
	if err != nil {
		return toStatus(err)
	}
	if publish && k.State != qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE {
		return status.Error(codes.FailedPrecondition, "key_id: the linkage key is retired: publish under the active key")
	}
	return nil
}

// linkageKey reads a linkage key from this broker's state. A refusal must
// not rest on a state that may be behind: a key the operator has just
// added (or made active again) may not have reached this broker yet, so
// when the local state does not know the key, or (to publish) holds it
// retired, the answer comes from a linearizable read, which reflects every
// write acknowledged before it.
func (l *locator) linkageKey(ctx context.Context, keyID string, publish bool) (*qhinv1.LinkageKey, error) {
	k, err := l.s.node.FSM().LinkageKey(keyID)
	if err == nil && (!publish || k.State == qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE) {
		return k, nil
	}
	if err != nil && !errors.Is(err, fsm.ErrNotFound) {
		return nil, err
	}
	f, err := l.s.node.Read(ctx, cluster.ReadLinearizable)
	if err != nil {
		return nil, err
	}
	return f.LinkageKey(keyID)
}

func (l *locator) PublishTokens(ctx context.Context, req *qhinv1.PublishTokensRequest) (*qhinv1.PublishTokensResponse, error) {
	p, err := l.member(ctx, req.ParticipantId, true)
	if err != nil {
		return nil, err
	}
	if err := l.checkTokens(ctx, req.KeyId, req.Tokens, req.RequestId, true); err != nil {
		return nil, err
	}
	// The cap counts what the member holds here and now: calls in flight
	// may take it a little past, never far.
	held, err := l.s.node.FSM().LocatorCount(p.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	if max := l.s.limits.MaxLocatorTokensPerMember; held+uint64(len(req.Tokens)) > uint64(max) {
		return nil, status.Errorf(codes.ResourceExhausted,
			"tokens: participant %s would hold more than %d tokens (--max-locator-tokens-per-member)", p.Id, max)
	}
	n, err := l.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_LOCATOR_PUBLISH, req.RequestId, p.Id, req.KeyId, req.Tokens)
	if err != nil {
		return nil, err
	}
	l.s.log.Debug("tokens published", "participant", p.Id, "tokens", len(req.Tokens), "added", n)
	return &qhinv1.PublishTokensResponse{Added: n}, nil
}

func (l *locator) WithdrawTokens(ctx context.Context, req *qhinv1.WithdrawTokensRequest) (*qhinv1.WithdrawTokensResponse, error) {
	p, err := l.member(ctx, req.ParticipantId, false)
	if err != nil {
		return nil, err
	}
	if err := l.checkTokens(ctx, req.KeyId, req.Tokens, req.RequestId, false); err != nil {
		return nil, err
	}
	n, err := l.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_LOCATOR_WITHDRAW, req.RequestId, p.Id, req.KeyId, req.Tokens)
	if err != nil {
		return nil, err
	}
	l.s.log.Debug("tokens withdrawn", "participant", p.Id, "tokens", len(req.Tokens), "removed", n)
	return &qhinv1.WithdrawTokensResponse{Removed: n}, nil
}

// apply commits a publish or withdrawal as one replicated entry.
func (l *locator) apply(ctx context.Context, t qhinv1.CommandType, reqID, participant, keyID string, tokens [][]byte) (uint32, error) {
	cmd, err := fsm.NewCommand(t, requestID(reqID), time.Now(),
		&qhinv1.LocatorUpdate{ParticipantId: participant, KeyId: keyID, Tokens: tokens})
	if err != nil {
		return 0, toStatus(err)
	}
	v, _, err := l.s.node.Apply(ctx, cmd)
	if err != nil {
		return 0, toStatus(err)
	}
	r, ok := v.(*qhinv1.LocatorUpdateResult)
	if !ok {
		return 0, toStatus(fmt.Errorf("%v returned %T", t, v))
	}
	return r.Changed, nil
}

func (l *locator) SetLinkageKey(ctx context.Context, req *qhinv1.SetLinkageKeyRequest) (*qhinv1.SetLinkageKeyResponse, error) {
	if !fsm.ValidKeyID(req.KeyId) {
		return nil, invalid("key_id", keyIDRule)
	}
	switch req.State {
	case qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE, qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_RETIRED:
	default:
		return nil, invalid("state", "must be active or retired")
	}
	if len(req.RequestId) > l.s.limits.Fields.IDBytes {
		return nil, invalid("request_id", fmt.Sprintf("must be at most %d bytes", l.s.limits.Fields.IDBytes))
	}
	cmd, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_LOCATOR_SET_KEY, requestID(req.RequestId), time.Now(),
		&qhinv1.LinkageKey{KeyId: req.KeyId, State: req.State})
	if err != nil {
		return nil, toStatus(err)
	}
	v, _, err := l.s.node.Apply(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	k, ok := v.(*qhinv1.LinkageKey)
	if !ok {
		return nil, toStatus(fmt.Errorf("set linkage key returned %T", v))
	}
	l.s.log.Info("linkage key set", "key_id", k.KeyId, "state", k.State.String(), "operator", caller(ctx))
	return &qhinv1.SetLinkageKeyResponse{Key: k}, nil
}

func (l *locator) LocatorStatus(ctx context.Context, _ *qhinv1.LocatorStatusRequest) (*qhinv1.LocatorStatusResponse, error) {
	f, err := l.s.node.Read(ctx, cluster.ReadLocal)
	if err != nil {
		return nil, toStatus(err)
	}
	keys, err := f.LinkageKeys()
	if err != nil {
		return nil, toStatus(err)
	}
	counts, err := f.LocatorCounts()
	if err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.LocatorStatusResponse{Keys: keys, Members: counts}, nil
}

// discoveryResponders decides which members a discovery query goes to: it
// checks the query's record-locator tokens, looks up the members that hold
// any of them, and leaves the decision to route.
func (g *gateway) discoveryResponders(ctx context.Context, initiator string, req *qhinv1.DiscoverPatientsRequest) (ask []*qhinv1.Participant, skipped []*qhinv1.ResponderStatus, err error) {
	sets, err := tokenSets(req.LocatorTokens)
	if err != nil {
		return nil, nil, err
	}
	directory, _, err := g.s.routing.get(g.s.node.FSM())
	if err != nil {
		return nil, nil, toStatus(err)
	}
	var holders map[string]bool
	if len(sets) > 0 && g.s.cfg.Routing != RoutingBroadcast {
		ids, err := g.s.node.FSM().LocatorHolders(sets)
		var unknown *fsm.UnknownKeyError
		if errors.As(err, &unknown) {
			// A key just added may not have reached this broker yet: refuse
			// only what a linearizable read does not know either.
			var f *fsm.FSM
			if f, err = g.s.node.Read(ctx, cluster.ReadLinearizable); err == nil {
				ids, err = f.LocatorHolders(sets)
			}
		}
		if errors.As(err, &unknown) {
			return nil, nil, invalid(fmt.Sprintf("locator_tokens[%d].key_id", unknown.Set), "not a linkage key of the network")
		}
		if err != nil {
			return nil, nil, toStatus(err)
		}
		holders = make(map[string]bool, len(ids))
		for _, id := range ids {
			holders[id] = true
		}
	}
	ask, skipped, decision := route(directory, initiator, req.PurposeOfUse, g.s.cfg.Routing, holders)
	g.s.routes.WithLabelValues(decision).Inc()
	return ask, skipped, nil
}

// tokenSets checks a query's token sets (their counts and the key id's
// length are capped by the field limits already) and converts them.
func tokenSets(in []*qhinv1.LocatorTokens) ([]fsm.TokenSet, error) {
	out := make([]fsm.TokenSet, 0, len(in))
	for i, s := range in {
		if !fsm.ValidKeyID(s.GetKeyId()) {
			return nil, invalid(fmt.Sprintf("locator_tokens[%d].key_id", i), keyIDRule)
		}
		if len(s.Tokens) == 0 {
			return nil, invalid(fmt.Sprintf("locator_tokens[%d].tokens", i), "at least one token is required")
		}
		for j, t := range s.Tokens {
			if len(t) != fsm.TokenSize {
				return nil, invalid(fmt.Sprintf("locator_tokens[%d].tokens[%d]", i, j), tokenRule)
			}
		}
		out = append(out, fsm.TokenSet{KeyID: s.KeyId, Tokens: s.Tokens})
	}
	return out, nil
}

// newRoutesMetric counts discovery routing decisions: targeted (to the
// members the locator named), fallback (no hit: every member), none (no
// hit under targeted-only) and broadcast (tokens not used).
func newRoutesMetric(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "discovery_routes_total",
		Help: "Discovery routing decisions: targeted, fallback, none or broadcast.",
	}, []string{"decision"})
	for _, d := range []string{decisionTargeted, decisionFallback, decisionNone, decisionBroadcast} {
		c.WithLabelValues(d)
	}
	reg.MustRegister(c)
	return c
}
