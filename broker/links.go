package broker

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Links are capabilities. A discovery answer carries, for each member's
// record of the person, a link the broker sealed: the record (member and
// local patient id), who may present it (the initiator), for what (the
// purpose) and until when, encrypted and authenticated with
// XChaCha20-Poly1305 under a key every broker holds (the link key table of
// the replicated state). A document query takes only such links and
// answers with document links sealed the same way; a retrieval takes only
// document links. A member reaches only what the network found for it.
//
// A link reads "q1." then, in unpadded base64url: the key id (4 bytes), a
// random 24-byte nonce, and the sealed LinkClaims; the key id and the
// prefix are authenticated too.

// Defaults of the link settings.
const (
	DefaultLinkTTL         = time.Hour
	DefaultLinkKeyRotation = 24 * time.Hour
)

// linksKeptPerRotation is how many link keys the table keeps: the new one
// and the one before, which opens the links still live when it was
// replaced (a link lives at most --link-ttl, which is at most the rotation
// interval).
const linksKeptPerRotation = fsm.MinLinkKeysKept

// linkAAD is what a link authenticates besides its claims: the prefix and
// the key id.
func linkAAD(keyID []byte) []byte {
	return append(append(make([]byte, 0, len(audit.LinkPrefix)+4), audit.LinkPrefix...), keyID...)
}

// linkKeys caches the AEADs of the replicated link keys.
type linkKeys struct {
	mu      sync.Mutex
	loaded  bool
	version uint64
	newest  uint32
	created time.Time
	aeads   map[uint32]cipher.AEAD
}

// get returns the keys' AEADs and the id of the newest, reloading them when
// the state's link keys moved.
func (k *linkKeys) get(f *fsm.FSM) (map[uint32]cipher.AEAD, uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := f.LinkKeysVersion()
	if k.loaded && v == k.version {
		return k.aeads, k.newest, nil
	}
	keys, err := f.LinkKeys()
	if err != nil {
		return nil, 0, err
	}
	aeads := make(map[uint32]cipher.AEAD, len(keys))
	var newest uint32
	var created time.Time
	for _, key := range keys {
		a, err := chacha20poly1305.NewX(key.Secret)
		if err != nil {
			return nil, 0, fmt.Errorf("link key %d: %w", key.Id, err)
		}
		aeads[key.Id] = a
		if key.Id > newest {
			newest, created = key.Id, key.Created.AsTime()
		}
	}
	k.aeads, k.newest, k.created, k.version, k.loaded = aeads, newest, created, v, true
	return aeads, newest, nil
}

// newestCreated is when the newest key was made (zero when there is none).
func (k *linkKeys) newestCreated(f *fsm.FSM) (uint32, time.Time, error) {
	if _, _, err := k.get(f); err != nil {
		return 0, time.Time{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.newest, k.created, nil
}

// errNoLinkKey is the answer of a broker whose state holds no link key yet
// (a new cluster, before its leader made the first).
var errNoLinkKey = status.Error(codes.Unavailable, "this broker holds no link key yet; retry")

// seal encrypts claims into a link under the newest key.
func (s *Server) seal(c *qhinv1.LinkClaims) (string, error) { return s.links.seal(s.node.FSM(), c) }

// open checks a link field and returns its claims: authentic, of the kind
// the field takes, issued to the caller for the purpose, not expired.
func (s *Server) open(field, link string, kind qhinv1.LinkKind, initiator, purposeCode string) (*qhinv1.LinkClaims, error) {
	return s.links.open(s.node.FSM(), time.Now(), field, link, kind, initiator, purposeCode)
}

// seal encrypts claims into a link under the newest key of f.
func (k *linkKeys) seal(f *fsm.FSM, c *qhinv1.LinkClaims) (string, error) {
	aeads, id, err := k.get(f)
	if err != nil {
		return "", toStatus(err)
	}
	a := aeads[id]
	if a == nil {
		return "", errNoLinkKey
	}
	plain, err := proto.Marshal(c)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 4+a.NonceSize(), 4+a.NonceSize()+len(plain)+a.Overhead())
	binary.BigEndian.PutUint32(buf, id)
	rand.Read(buf[4:])
	buf = a.Seal(buf, buf[4:], plain, linkAAD(buf[:4]))
	return audit.LinkPrefix + base64.RawURLEncoding.EncodeToString(buf), nil
}

// Refusals of a link. Each names the field; none repeats the link.
var (
	errLinkMalformed   = errors.New("not a link this network issued (malformed); use a link a discovery or document query returned")
	errLinkUnknownKey  = errors.New("not a link this network issued, or issued under a key it no longer holds; discover the patient again")
	errLinkForged      = errors.New("not a link this network issued (it does not authenticate)")
	errLinkExpired     = errors.New("expired; discover the patient again for a fresh link")
	errLinkOtherMember = errors.New("issued to another member; links are valid only for the member that received them")
)

// open opens a link with the keys of f, as of now.
func (k *linkKeys) open(f *fsm.FSM, now time.Time, field, link string, kind qhinv1.LinkKind, initiator, purposeCode string) (*qhinv1.LinkClaims, error) {
	invalid := func(err error) error { return status.Errorf(codes.InvalidArgument, "%s: %v", field, err) }
	if link == "" {
		return nil, status.Errorf(codes.InvalidArgument, "%s: required: the opaque link a discovery or document query returned (member and record ids alone are not accepted)", field)
	}
	if len(link) <= len(audit.LinkPrefix) || link[:len(audit.LinkPrefix)] != audit.LinkPrefix {
		return nil, invalid(errLinkMalformed)
	}
	raw, err := base64.RawURLEncoding.DecodeString(link[len(audit.LinkPrefix):])
	if err != nil || len(raw) < 4+chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, invalid(errLinkMalformed)
	}
	aeads, _, err := k.get(f)
	if err != nil {
		return nil, toStatus(err)
	}
	a := aeads[binary.BigEndian.Uint32(raw)]
	if a == nil {
		return nil, invalid(errLinkUnknownKey)
	}
	nonce, sealed := raw[4:4+a.NonceSize()], raw[4+a.NonceSize():]
	plain, err := a.Open(nil, nonce, sealed, linkAAD(raw[:4]))
	if err != nil {
		return nil, invalid(errLinkForged)
	}
	c := new(qhinv1.LinkClaims)
	if err := proto.Unmarshal(plain, c); err != nil {
		return nil, invalid(errLinkForged)
	}
	switch {
	case c.Kind != kind && kind == qhinv1.LinkKind_LINK_KIND_PATIENT:
		return nil, invalid(errors.New("a document link, where a patient link goes"))
	case c.Kind != kind:
		return nil, invalid(errors.New("a patient link, where a document link goes"))
	case now.Unix() > c.ExpiresUnix:
		return nil, invalid(errLinkExpired)
	case c.InitiatorParticipantId != initiator:
		return nil, status.Errorf(codes.PermissionDenied, "%s: %v", field, errLinkOtherMember)
	case c.PurposeOfUse != purposeCode:
		return nil, status.Errorf(codes.PermissionDenied, "%s: issued for %s queries, not %s", field, c.PurposeOfUse, purposeCode)
	}
	return c, nil
}

// issuePersonLinks seals a link into every link of the persons found, and
// returns their audit references.
func (g *gateway) issuePersonLinks(initiator, purposeCode string, persons []*qhinv1.Person) ([]string, error) {
	expires := time.Now().Add(g.s.cfg.LinkTTL).Unix()
	var refs []string
	for _, p := range persons {
		for _, l := range p.Links {
			link, err := g.s.seal(&qhinv1.LinkClaims{Kind: qhinv1.LinkKind_LINK_KIND_PATIENT, InitiatorParticipantId: initiator,
				PurposeOfUse: purposeCode, ExpiresUnix: expires, ParticipantId: l.ParticipantId, PatientId: l.PatientId})
			if err != nil {
				return nil, err
			}
			l.Link = link
			refs = append(refs, audit.LinkRef(link))
		}
	}
	return refs, nil
}

// openedLinks are the patient links of a document query, opened.
type openedLinks struct {
	links []*qhinv1.PatientLink
	refs  []string
	// expires is, per member, the latest expiry of its links: the
	// document links it answers with live no longer.
	expires map[string]int64
	// patients is, per member, the patient ids the links name, with the
	// audit reference of the (first) link that named each.
	patients map[string]map[string]string
}

// openPatientLinks opens every link of a document query; the first that
// does not open refuses the query.
func (g *gateway) openPatientLinks(initiator, purposeCode string, in []*qhinv1.PatientLink) (*openedLinks, error) {
	out := &openedLinks{expires: map[string]int64{}, patients: map[string]map[string]string{}}
	for i, l := range in {
		c, err := g.s.open(fmt.Sprintf("links[%d].link", i), l.GetLink(), qhinv1.LinkKind_LINK_KIND_PATIENT, initiator, purposeCode)
		if err != nil {
			return nil, err
		}
		ref := audit.LinkRef(l.Link)
		out.links = append(out.links, &qhinv1.PatientLink{ParticipantId: c.ParticipantId, PatientId: c.PatientId})
		out.refs = append(out.refs, ref)
		out.expires[c.ParticipantId] = max(out.expires[c.ParticipantId], c.ExpiresUnix)
		if out.patients[c.ParticipantId] == nil {
			out.patients[c.ParticipantId] = map[string]string{}
		}
		if _, seen := out.patients[c.ParticipantId][c.PatientId]; !seen {
			out.patients[c.ParticipantId][c.PatientId] = ref
		}
	}
	return out, nil
}

// issueDocumentLinks seals a link into every document listed, bound like
// the patient links it was listed under, and returns their references.
func (g *gateway) issueDocumentLinks(initiator, purposeCode string, opened *openedLinks, docs []*qhinv1.DocumentMetadata) ([]string, error) {
	ttl := time.Now().Add(g.s.cfg.LinkTTL).Unix()
	var refs []string
	for _, d := range docs {
		member := d.SourceParticipantId
		patient := d.GetPatient().GetPatientId()
		ref, asked := opened.patients[member][patient]
		if !asked {
			// QueryDocuments drops such documents before links are
			// issued; none is issued a link without its patient.
			return nil, fmt.Errorf("document of member %s names a patient it was not asked about", member)
		}
		link, err := g.s.seal(&qhinv1.LinkClaims{Kind: qhinv1.LinkKind_LINK_KIND_DOCUMENT, InitiatorParticipantId: initiator,
			PurposeOfUse: purposeCode, ExpiresUnix: min(ttl, opened.expires[member]), ParticipantId: member,
			PatientId: patient, DocumentId: d.Id, PatientRef: ref})
		if err != nil {
			return nil, err
		}
		d.Link = link
		refs = append(refs, audit.LinkRef(link))
	}
	return refs, nil
}

// keepLinkKeys makes the first link key and rotates it: while this broker
// leads, it proposes a new key when there is none or when the newest is
// older than the rotation interval. A proposal the cluster cannot take yet
// (a broker not upgraded, no quorum) is retried.
func (s *Server) keepLinkKeys() {
	const retry = 250 * time.Millisecond
	check := max(min(s.cfg.LinkKeyRotation/10, time.Minute), retry)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		next := check
		id, created, err := s.links.newestCreated(s.node.FSM())
		if err == nil && s.node.IsLeader() && (id == 0 || time.Since(created) >= s.cfg.LinkKeyRotation) {
			if err := s.rotateLinkKey(id + 1); err != nil {
				s.log.Debug("link key rotation deferred", "key", id+1, "error", err)
				next = retry
			} else {
				s.log.Info("link key rotated", "key", id+1)
			}
		} else if id == 0 {
			next = retry
		}
		t.Reset(next)
	}
}

func (s *Server) rotateLinkKey(id uint32) error {
	secret := make([]byte, fsm.LinkKeySize)
	rand.Read(secret)
	cmd, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_ROTATE_LINK_KEY, fmt.Sprintf("link-key-%d", id), time.Now(),
		&qhinv1.LinkKey{Id: id, Secret: secret, Keep: linksKeptPerRotation})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = s.node.Apply(ctx, cmd)
	return err
}

// hasLinkKey reports whether the broker can issue links.
func (s *Server) hasLinkKey() bool {
	id, _, err := s.links.newestCreated(s.node.FSM())
	return err == nil && id > 0
}
