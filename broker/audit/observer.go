package audit

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// refusals are the codes that mean the node refused a call: the caller's
// identity, standing, input or share of the node. Failures of the node or
// of a member (Unavailable, DeadlineExceeded, Internal, ...) are not
// refusals.
var refusals = map[codes.Code]bool{
	codes.InvalidArgument:    true,
	codes.PermissionDenied:   true,
	codes.Unauthenticated:    true,
	codes.ResourceExhausted:  true,
	codes.FailedPrecondition: true,
	codes.OutOfRange:         true,
	codes.NotFound:           true,
	codes.AlreadyExists:      true,
}

// Observer returns the function a node's gRPC server calls after every
// call (pki.ServerConfig.Observe): it records each refused call — caller,
// method, code and the refusal's message, which by the network's rule names
// fields and rules, never values — and each call of an audited method
// (operators' writes, reads of the ledger), whatever its outcome. Queries
// that succeed are recorded by their handlers, with what they disclosed.
//
// audited maps a full method name to the action its entries carry.
func (l *Ledger) Observer(audited map[string]string) func(ctx context.Context, method string, err error) {
	return func(ctx context.Context, method string, err error) {
		if l == nil || strings.HasPrefix(method, "/grpc.health.") || strings.HasPrefix(method, "/grpc.reflection.") {
			return
		}
		st := status.Convert(err)
		action, ok := audited[method]
		switch {
		case ok:
		case err != nil && refusals[st.Code()]:
			action = ActionRefused
		default:
			return
		}
		e := &qhinv1.AuditEntry{Actor: Caller(ctx), Action: action, Method: method, Outcome: st.Code().String()}
		if err != nil {
			e.Reason = bound(st.Message())
		}
		if id, ok := callerIdentity(ctx); ok && id.Role == pki.RoleParticipant {
			e.InitiatorParticipantId = id.Name
		}
		l.Record(e)
	}
}

// Caller names the caller of a call: its SPIFFE ID, or "unauthenticated".
func Caller(ctx context.Context) string {
	if id, ok := callerIdentity(ctx); ok {
		return id.String()
	}
	if u, ok := LocalCaller(ctx); ok {
		return u
	}
	return "unauthenticated"
}

func callerIdentity(ctx context.Context) (pki.Identity, bool) {
	if id, ok := pki.IdentityFromContext(ctx); ok {
		return id, true
	}
	id, err := pki.PeerIdentity(ctx)
	return id, err == nil
}

type localCallerKey struct{}

// WithLocalCaller marks ctx as a call from a local caller that has no
// SPIFFE ID (a unix socket peer, "unix:UID").
func WithLocalCaller(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, localCallerKey{}, who)
}

// LocalCaller returns what WithLocalCaller recorded.
func LocalCaller(ctx context.Context) (string, bool) {
	s, ok := ctx.Value(localCallerKey{}).(string)
	return s, ok
}

// maxReason bounds a refusal's message in an entry.
const maxReason = 512

func bound(s string) string {
	if len(s) <= maxReason {
		return s
	}
	return strings.ToValidUTF8(s[:maxReason], "") + "…"
}
