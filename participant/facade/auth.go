package facade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Headers an EHR names the purpose and the end user with.
const (
	HeaderPurpose      = "X-Purpose-Of-Use"
	HeaderRequesterID  = "X-Requester-Id"
	HeaderRequesterNPI = "X-Requester-NPI"
	HeaderName         = "X-Requester-Name"
	HeaderRole         = "X-Requester-Role"
	HeaderOrganization = "X-Requester-Organization"
)

// caller is who a request is made for and why, as the EHR asserts it.
type caller struct {
	purpose   string
	requester *qhinv1.Requester
	// npi is the end user's National Provider Identifier, when given.
	npi string
	// scopes are the SMART scopes of a bearer token; nil without one
	// (then every interaction is allowed).
	scopes []string
}

// owner binds the facade's ids to the purpose and end user they were found
// for: another purpose or user may not use them.
func (c *caller) owner() string {
	return c.purpose + "\x00" + c.requester.GetId()
}

// allows reports whether the caller's scopes grant access to resource type
// typ, for writing when write is set. SMART v1 (read, write, *) and v2
// (c r u d s) scopes of the system/ and user/ contexts are understood.
func (c *caller) allows(typ string, write bool) bool {
	if c.scopes == nil {
		return true
	}
	for _, s := range c.scopes {
		ctx, rest, ok := strings.Cut(s, "/")
		if !ok || (ctx != "system" && ctx != "user") {
			continue
		}
		res, perm, ok := strings.Cut(rest, ".")
		if !ok || (res != typ && res != "*") {
			continue
		}
		// v1: read, write, *; v2: letters of "cruds" in that order.
		v2 := perm != "" && strings.Trim(perm, "cruds") == ""
		if perm == "*" || (!write && (perm == "read" || v2 && strings.ContainsAny(perm, "rs"))) ||
			(write && (perm == "write" || v2 && strings.ContainsAny(perm, "cud"))) {
			return true
		}
	}
	return false
}

// errAuth is a request whose credentials are missing or not valid: 401.
type errAuth struct{ msg string }

func (e *errAuth) Error() string { return e.msg }

// JWTConfig configures bearer-token authentication (SMART Backend
// Services): every request but GET /metadata must carry
// "Authorization: Bearer JWT", signed by a key of the JWKS.
type JWTConfig struct {
	// JWKS is a file path or an https:// URL of the authorization server's
	// JSON Web Key Set.
	JWKS string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Audience must be one of the token's aud (the facade's base URL, as
	// the authorization server names it).
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat; one minute when
	// zero.
	Leeway time.Duration
	// HTTPClient fetches a JWKS URL; a client with a 10 s timeout when nil.
	HTTPClient *http.Client
}

// Algorithms a token may be signed with: SMART Backend Services' RS384 and
// ES384, and the common RS256, ES256 and PS variants. Never "none" or HMAC.
var allowedAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.ES256, jose.ES384}

// maxJWKSBytes caps a fetched key set.
const maxJWKSBytes = 1 << 20

// Verifier checks bearer tokens against a JWKS.
type Verifier struct {
	cfg JWTConfig
	now func() time.Time
	log *slog.Logger

	mu        sync.Mutex
	keys      jose.JSONWebKeySet
	refreshed time.Time
}

// NewVerifier loads the key set (fetching a URL with a deadline).
func NewVerifier(ctx context.Context, cfg JWTConfig, log *slog.Logger) (*Verifier, error) {
	if cfg.JWKS == "" {
		return nil, errors.New("jwt: a JWKS file or URL is required")
	}
	if cfg.Audience == "" {
		return nil, errors.New("jwt: an audience is required (the facade's URL as the authorization server names it)")
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if log == nil {
		log = slog.Default()
	}
	v := &Verifier{cfg: cfg, now: time.Now, log: log}
	if err := v.refresh(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

// refresh loads the key set again.
func (v *Verifier) refresh(ctx context.Context) error {
	var r io.ReadCloser
	if strings.HasPrefix(v.cfg.JWKS, "https://") || strings.HasPrefix(v.cfg.JWKS, "http://") {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKS, nil)
		if err != nil {
			return fmt.Errorf("jwks: %w", err)
		}
		resp, err := v.cfg.HTTPClient.Do(req)
		if err != nil {
			return fmt.Errorf("jwks: fetch: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("jwks: fetch: HTTP %d", resp.StatusCode)
		}
		r = resp.Body
	} else {
		f, err := os.Open(v.cfg.JWKS)
		if err != nil {
			return fmt.Errorf("jwks: %w", err)
		}
		r = f
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("jwks: read: %w", err)
	}
	if len(b) > maxJWKSBytes {
		return fmt.Errorf("jwks: larger than %d bytes", maxJWKSBytes)
	}
	var ks jose.JSONWebKeySet
	if err := json.Unmarshal(b, &ks); err != nil {
		return fmt.Errorf("jwks: not a JSON Web Key Set: %w", err)
	}
	for _, k := range ks.Keys {
		if !k.IsPublic() {
			return errors.New("jwks: holds a private or symmetric key; only public keys belong there")
		}
	}
	v.mu.Lock()
	v.keys, v.refreshed = ks, v.now()
	v.mu.Unlock()
	return nil
}

// key finds the key a token names, loading the set again (at most once a
// minute) when it does not hold it: the authorization server may have
// rotated its keys.
func (v *Verifier) key(ctx context.Context, kid string) (*jose.JSONWebKey, bool) {
	find := func() (*jose.JSONWebKey, bool) {
		v.mu.Lock()
		defer v.mu.Unlock()
		var ks []jose.JSONWebKey
		if kid != "" {
			ks = v.keys.Key(kid)
		} else if len(v.keys.Keys) == 1 {
			ks = v.keys.Keys
		}
		if len(ks) == 0 {
			return nil, false
		}
		return &ks[0], true
	}
	if k, ok := find(); ok {
		return k, true
	}
	v.mu.Lock()
	stale := v.now().Sub(v.refreshed) > time.Minute
	v.mu.Unlock()
	if stale {
		if err := v.refresh(ctx); err != nil {
			v.log.Warn("jwks refresh failed", "error", err)
		}
		return find()
	}
	return nil, false
}

// hl7B2B is the authorization extension TEFCA's Facilitated FHIR and UDAP
// put in a token: who the user is and why they ask.
type hl7B2B struct {
	PurposeOfUse     json.RawMessage `json:"purpose_of_use"`
	SubjectID        string          `json:"subject_id"`
	SubjectName      string          `json:"subject_name"`
	SubjectRole      json.RawMessage `json:"subject_role"`
	OrganizationName string          `json:"organization_name"`
	OrganizationID   string          `json:"organization_id"`
}

// tokenClaims are the claims the facade reads beyond the registered ones.
type tokenClaims struct {
	Scope        string          `json:"scope"`
	PurposeOfUse json.RawMessage `json:"purpose_of_use"`
	Name         string          `json:"name"`
	Role         string          `json:"role"`
	Organization string          `json:"organization"`
	NPI          string          `json:"npi"`
	Extensions   struct {
		B2B *hl7B2B `json:"hl7-b2b"`
	} `json:"extensions"`
}

// verify checks a bearer token and returns what it says of the caller.
// Errors are *errAuth (401) and never quote the token.
func (v *Verifier) verify(ctx context.Context, raw string) (*caller, error) {
	tok, err := jwt.ParseSigned(raw, allowedAlgorithms)
	if err != nil {
		return nil, &errAuth{"the bearer token is not a signed JWT with an accepted algorithm (RS256, RS384, RS512, PS256, PS384, ES256, ES384)"}
	}
	if len(tok.Headers) != 1 {
		return nil, &errAuth{"the bearer token must carry exactly one signature"}
	}
	key, ok := v.key(ctx, tok.Headers[0].KeyID)
	if !ok {
		return nil, &errAuth{"the bearer token is signed by a key that is not in the JWKS"}
	}
	var (
		std   jwt.Claims
		extra tokenClaims
	)
	if err := tok.Claims(key.Key, &std, &extra); err != nil {
		return nil, &errAuth{"the bearer token's signature does not verify"}
	}
	if std.Expiry == nil {
		return nil, &errAuth{"the bearer token has no exp claim"}
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: v.now()}, v.cfg.Leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, &errAuth{"the bearer token has expired"}
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, &errAuth{"the bearer token is not valid yet"}
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, &errAuth{"the bearer token's iss is not the configured issuer"}
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, &errAuth{"the bearer token's aud does not name this server"}
	case err != nil:
		return nil, &errAuth{"the bearer token's claims are not valid"}
	}
	c := &caller{requester: &qhinv1.Requester{Id: std.Subject, Name: extra.Name, Role: extra.Role, Organization: extra.Organization}, npi: extra.NPI}
	c.purpose = firstCode(extra.PurposeOfUse)
	if b := extra.Extensions.B2B; b != nil {
		if p := firstCode(b.PurposeOfUse); p != "" {
			c.purpose = p
		}
		c.requester.Id = firstNonEmpty(b.SubjectID, c.requester.Id)
		c.requester.Name = firstNonEmpty(b.SubjectName, c.requester.Name)
		c.requester.Role = firstNonEmpty(firstCode(b.SubjectRole), c.requester.Role)
		c.requester.Organization = firstNonEmpty(b.OrganizationName, b.OrganizationID, c.requester.Organization)
	}
	c.scopes = strings.Fields(extra.Scope)
	if c.scopes == nil {
		c.scopes = []string{} // a token without scopes grants nothing
	}
	return c, nil
}

// firstCode reads a claim that is a code, a list of codes, or a code
// system URI with "#code": the last part of the first.
func firstCode(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var l []string
		if json.Unmarshal(raw, &l) != nil || len(l) == 0 {
			return ""
		}
		s = l[0]
	}
	if i := strings.LastIndexByte(s, '#'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// authenticate returns the caller of r: from its bearer token when the
// facade verifies tokens (headers then fill in only what the token does not
// say), else from its headers.
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	hdr := &caller{
		purpose: strings.TrimSpace(r.Header.Get(HeaderPurpose)),
		npi:     strings.TrimSpace(r.Header.Get(HeaderRequesterNPI)),
		requester: &qhinv1.Requester{
			Id:           strings.TrimSpace(r.Header.Get(HeaderRequesterID)),
			Name:         strings.TrimSpace(r.Header.Get(HeaderName)),
			Role:         strings.TrimSpace(r.Header.Get(HeaderRole)),
			Organization: strings.TrimSpace(r.Header.Get(HeaderOrganization)),
		},
	}
	if s.verifier == nil {
		return hdr, nil
	}
	auth := r.Header.Get("Authorization")
	raw, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || strings.TrimSpace(raw) == "" {
		return nil, &errAuth{"a bearer token is required (Authorization: Bearer JWT)"}
	}
	c, err := s.verifier.verify(r.Context(), strings.TrimSpace(raw))
	if err != nil {
		return nil, err
	}
	c.purpose = firstNonEmpty(c.purpose, hdr.purpose)
	c.npi = firstNonEmpty(c.npi, hdr.npi)
	c.requester.Id = firstNonEmpty(c.requester.Id, hdr.requester.Id)
	c.requester.Name = firstNonEmpty(c.requester.Name, hdr.requester.Name)
	c.requester.Role = firstNonEmpty(c.requester.Role, hdr.requester.Role)
	c.requester.Organization = firstNonEmpty(c.requester.Organization, hdr.requester.Organization)
	return c, nil
}
