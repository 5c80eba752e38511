package broker

import (
	"math"
	"time"

	"github.com/openqhin/openqhin/broker/sizes"
	"github.com/openqhin/openqhin/pki"
)

// Defaults of Limits fields left zero.
const (
	DefaultMaxQueriesPerInitiator    = 64
	DefaultMaxRetrievesPerInitiator  = 16
	DefaultMaxMembersPerQuery        = 64
	DefaultMaxCandidatesPerResponder = 100
	DefaultMaxDocumentsPerResponder  = 1000
	DefaultMaxResponderMessageBytes  = 1 << 20
	DefaultSendTimeout               = 30 * time.Second
	DefaultMemberStreamWindowBytes   = 256 << 10
	DefaultMemberConnWindowBytes     = 1 << 20
)

// Limits bound the work one caller, or one member, can make a broker do.
// Zero fields take the defaults.
type Limits struct {
	// Server bounds connections, handshakes, streams and messages, and
	// the flow-control windows the broker grants its callers.
	Server pki.ServerLimits
	// Fields caps the string and repeated fields of requests and of
	// members' answers.
	Fields sizes.Limits
	// MaxQueriesPerInitiator caps the discovery and document queries one
	// member has in flight at this broker; MaxRetrievesPerInitiator its
	// document retrievals.
	MaxQueriesPerInitiator   int
	MaxRetrievesPerInitiator int
	// MaxMembersPerQuery caps the distinct members one document query's
	// links name: a person is held by a few members, never by hundreds.
	MaxMembersPerQuery int
	// MaxCandidatesPerResponder and MaxDocumentsPerResponder cap what the
	// broker keeps of one member's answer; the rest is dropped, and the
	// member's status says so.
	MaxCandidatesPerResponder int
	MaxDocumentsPerResponder  int
	// MaxResponderMessageBytes caps one message from a member.
	MaxResponderMessageBytes int
	// MemberStreamWindowBytes and MemberConnWindowBytes are the static
	// flow-control windows the broker grants members: what a member may
	// stream ahead of what the broker has passed on.
	MemberStreamWindowBytes int
	MemberConnWindowBytes   int
	// SendTimeout bounds how long the broker waits for an initiator to
	// take each piece of a document it retrieves.
	SendTimeout time.Duration
	// MaxLocatorTokensPerMember caps the record-locator tokens one member
	// may hold.
	MaxLocatorTokensPerMember int
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	l.Server = l.Server.WithDefaults()
	l.Fields = l.Fields.WithDefaults()
	def(&l.MaxQueriesPerInitiator, DefaultMaxQueriesPerInitiator)
	def(&l.MaxRetrievesPerInitiator, DefaultMaxRetrievesPerInitiator)
	def(&l.MaxMembersPerQuery, DefaultMaxMembersPerQuery)
	def(&l.MaxCandidatesPerResponder, DefaultMaxCandidatesPerResponder)
	def(&l.MaxDocumentsPerResponder, DefaultMaxDocumentsPerResponder)
	def(&l.MaxResponderMessageBytes, DefaultMaxResponderMessageBytes)
	def(&l.MemberStreamWindowBytes, DefaultMemberStreamWindowBytes)
	def(&l.MemberConnWindowBytes, DefaultMemberConnWindowBytes)
	def(&l.MaxLocatorTokensPerMember, DefaultMaxLocatorTokensPerMember)
	// gRPC takes windows as 32-bit numbers.
	l.MemberStreamWindowBytes = min(l.MemberStreamWindowBytes, math.MaxInt32)
	l.MemberConnWindowBytes = min(l.MemberConnWindowBytes, math.MaxInt32)
	if l.SendTimeout <= 0 {
		l.SendTimeout = DefaultSendTimeout
	}
	return l
}
