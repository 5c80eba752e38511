package pki

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Role is the kind of node a SPIFFE ID names.
type Role string

// The roles of an OpenQHIN network.
const (
	RoleBroker      Role = "broker"
	RoleParticipant Role = "participant"
	RoleOperator    Role = "operator"
)

// Roles lists every role, in a stable order.
var Roles = []Role{RoleBroker, RoleParticipant, RoleOperator}

// ErrBadIdentity is returned for a SPIFFE ID that does not name a role and a
// node of the network.
var ErrBadIdentity = errors.New("not an OpenQHIN identity")

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateName checks a node, participant or operator name: lowercase letters,
// digits, dot, underscore and dash, starting with a letter or digit, at most 63
// characters.
func ValidateName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%q: use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// Identity is a parsed OpenQHIN SPIFFE ID.
type Identity struct {
	ID   spiffeid.ID
	Role Role
	// Name is the node id, participant id or operator name.
	Name string
}

func (i Identity) String() string { return i.ID.String() }

// ParseIdentity parses id as spiffe://<td>/<role>/<name>.
func ParseIdentity(id spiffeid.ID) (Identity, error) {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 2 {
		return Identity{}, fmt.Errorf("%w: %s: path must be /<role>/<name>", ErrBadIdentity, id)
	}
	role := Role(segs[0])
	switch role {
	case RoleBroker, RoleParticipant, RoleOperator:
	default:
		return Identity{}, fmt.Errorf("%w: %s: unknown role %q", ErrBadIdentity, id, segs[0])
	}
	if err := ValidateName(segs[1]); err != nil {
		return Identity{}, fmt.Errorf("%w: %s: name %v", ErrBadIdentity, id, err)
	}
	return Identity{ID: id, Role: role, Name: segs[1]}, nil
}

// ParseIdentityString parses a SPIFFE ID string as an Identity.
func ParseIdentityString(s string) (Identity, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %q: %v", ErrBadIdentity, s, err)
	}
	return ParseIdentity(id)
}

// NewIdentity builds the identity of a named node of a role.
func NewIdentity(td spiffeid.TrustDomain, role Role, name string) (Identity, error) {
	if !slices.Contains(Roles, role) {
		return Identity{}, fmt.Errorf("%w: unknown role %q", ErrBadIdentity, role)
	}
	if err := ValidateName(name); err != nil {
		return Identity{}, fmt.Errorf("%s name %v", role, err)
	}
	id, err := spiffeid.FromSegments(td, string(role), name)
	if err != nil {
		return Identity{}, fmt.Errorf("%s %s: %w", role, name, err)
	}
	return Identity{ID: id, Role: role, Name: name}, nil
}

// MustIdentity is NewIdentity for names known to be valid; it panics otherwise.
func MustIdentity(td spiffeid.TrustDomain, role Role, name string) Identity {
	id, err := NewIdentity(td, role, name)
	if err != nil {
		panic(err)
	}
	return id
}
