package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/openqhin/openqhin/participant/facade"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestFHIR_PartialAnswersAndTimeouts: a member that does not answer in time
// appears in an OperationOutcome entry next to the others' results; when
// every member asked times out, the search answers 504.
func TestFHIR_PartialAnswersAndTimeouts(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3, FHIR: true, ResponderTimeout: 500 * time.Millisecond,
		Delay: map[string]time.Duration{"p3": time.Hour}})
	if _, err := n.SeedSynthetic(callCtx(t), 100, 1, nil); err != nil {
		t.Fatal(err)
	}
	d, err := examplePerson(n.Participants[1].Server.Store(), n.Participants[2].Server.Store())
	if err != nil || d == nil {
		t.Fatalf("example person: %v", err)
	}
	ehr := newFHIREHR(t, n, 0)
	got := ehr.do("GET", "/Patient?"+patientQuery(d).Encode(), nil).want(t, "p3 slow", 200, "")
	var outcome any
	for _, e := range path(got.json, "entry").([]any) {
		if path(e, "search", "mode") == "outcome" {
			outcome = path(e, "resource")
		}
	}
	if len(matchEntries(got.json)) != 1 || path(outcome, "resourceType") != "OperationOutcome" ||
		!strings.Contains(str(path(outcome, "issue", 0, "diagnostics")), "member p3 did not answer: timeout") ||
		path(outcome, "issue", 0, "code") != "timeout" {
		t.Fatalf("want the person found at p2 and an OperationOutcome entry naming p3: %s", got.body)
	}

	// With p2 suspended, only p3 is asked, and it does not answer.
	if _, err := dial(t, n, n.Operator()).Directory().SetParticipantStatus(callCtx(t), &qhinv1.SetParticipantStatusRequest{
		ParticipantId: "p2", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED, Reason: "fhir test"}); err != nil {
		t.Fatal(err)
	}
	ehr.do("GET", "/Patient?"+patientQuery(d).Encode(), nil).want(t, "every member slow", 504, "answered in time")
	ehr.seen.validate(t)
}

// jwtIssuer signs tokens as a SMART authorization server would.
type jwtIssuer struct {
	t    *testing.T
	key  any
	kid  string
	alg  jose.SignatureAlgorithm
	aud  string
	iss  string
	jwks string // file
	ec   *ecdsa.PrivateKey
}

func newJWTIssuer(t *testing.T, aud string) *jwtIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &key.PublicKey, KeyID: "rsa-1", Algorithm: string(jose.RS384), Use: "sig"},
		{Key: &ec.PublicKey, KeyID: "ec-1", Algorithm: string(jose.ES384), Use: "sig"},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return &jwtIssuer{t: t, key: key, kid: "rsa-1", alg: jose.RS384, aud: aud, iss: "https://auth.example.org", jwks: file, ec: ec}
}

// token signs claims; mutate changes them first.
func (j *jwtIssuer) token(mutate func(std *jwt.Claims, extra map[string]any)) string {
	j.t.Helper()
	now := time.Now()
	std := jwt.Claims{Issuer: j.iss, Subject: "1234567893", Audience: jwt.Audience{j.aud},
		Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)), IssuedAt: jwt.NewNumericDate(now), ID: "t1"}
	extra := map[string]any{"scope": "system/Patient.rs system/DocumentReference.rs system/Binary.r", "purpose_of_use": "T-TREAT"}
	if mutate != nil {
		mutate(&std, extra)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: j.alg, Key: j.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", j.kid))
	if err != nil {
		j.t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(std).Claims(extra).Serialize()
	if err != nil {
		j.t.Fatal(err)
	}
	return tok
}

// TestFHIR_BearerTokens runs the facade with SMART Backend Services
// tokens: a valid token names the purpose and the user (or the hl7-b2b
// extension does); a missing, expired, foreign-key, forged or misaddressed
// token is 401; a token whose scopes do not cover the resource is 403.
func TestFHIR_BearerTokens(t *testing.T) {
	const aud = "https://fhir.p1.example.org"
	iss := newJWTIssuer(t, aud)
	v, err := facade.NewVerifier(context.Background(), facade.JWTConfig{JWKS: iss.jwks, Issuer: iss.iss, Audience: aud}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3, FHIR: true, FHIRVerifier: v})
	if _, err := n.SeedSynthetic(callCtx(t), 100, 1, nil); err != nil {
		t.Fatal(err)
	}
	d, err := examplePerson(n.Participants[1].Server.Store(), n.Participants[2].Server.Store())
	if err != nil || d == nil {
		t.Fatalf("example person: %v", err)
	}
	ehr := newFHIREHR(t, n, 0)
	ehr.headers.Del("X-Purpose-Of-Use")
	ehr.headers.Del("X-Requester-Id")
	search := "/Patient?" + patientQuery(d).Encode()

	// Another key, with the same kid, and one the JWKS does not hold.
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	forged := &jwtIssuer{t: t, key: otherKey, kid: "rsa-1", alg: jose.RS384, aud: aud, iss: iss.iss}
	unknown := &jwtIssuer{t: t, key: otherKey, kid: "rsa-9", alg: jose.RS384, aud: aud, iss: iss.iss}
	es384 := &jwtIssuer{t: t, key: iss.ec, kid: "ec-1", alg: jose.ES384, aud: aud, iss: iss.iss}

	for _, c := range []struct {
		name   string
		token  string
		header []string
		status int
		says   string
	}{
		{"valid token", iss.token(nil), nil, 200, ""},
		{"valid ES384 token", es384.token(nil), nil, 200, ""},
		{"the hl7-b2b extension names purpose and user", iss.token(func(std *jwt.Claims, x map[string]any) {
			delete(x, "purpose_of_use")
			std.Subject = "client-app"
			x["extensions"] = map[string]any{"hl7-b2b": map[string]any{"version": "1", "purpose_of_use": []string{"urn:oid:2.16.840.1.113883.3.7204.1.5.2.1#T-TREAT"},
				"subject_id": "1234567893", "subject_name": "Dr. Test", "organization_name": "Riverside General Hospital"}}
		}), nil, 200, ""},
		{"no token", "", nil, 401, "a bearer token is required"},
		{"not a JWT", "not-a-token", nil, 401, "not a signed JWT"},
		{"expired", iss.token(func(std *jwt.Claims, _ map[string]any) {
			std.Expiry = jwt.NewNumericDate(time.Now().Add(-10 * time.Minute))
			std.IssuedAt = jwt.NewNumericDate(time.Now().Add(-20 * time.Minute))
		}), nil, 401, "has expired"},
		{"no exp", iss.token(func(std *jwt.Claims, _ map[string]any) { std.Expiry = nil }), nil, 401, "no exp claim"},
		{"a key not in the JWKS", unknown.token(nil), nil, 401, "not in the JWKS"},
		{"a forged signature", forged.token(nil), nil, 401, "does not verify"},
		{"another audience", iss.token(func(std *jwt.Claims, _ map[string]any) { std.Audience = jwt.Audience{"https://elsewhere"} }), nil, 401, "aud does not name this server"},
		{"another issuer", iss.token(func(std *jwt.Claims, _ map[string]any) { std.Issuer = "https://evil.example" }), nil, 401, "not the configured issuer"},
		{"scopes without Patient", iss.token(func(_ *jwt.Claims, x map[string]any) { x["scope"] = "system/Binary.r" }), nil, 403, "do not allow reading Patient"},
		{"no purpose anywhere", iss.token(func(_ *jwt.Claims, x map[string]any) { delete(x, "purpose_of_use") }), nil, 400, "X-Purpose-Of-Use: required"},
		{"the header fills a purpose the token lacks", iss.token(func(_ *jwt.Claims, x map[string]any) { delete(x, "purpose_of_use") }), []string{"X-Purpose-Of-Use", "T-TREAT"}, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := []string{"Authorization", ""}
			if c.token != "" {
				h = []string{"Authorization", "Bearer " + c.token}
			}
			r := ehr.do("GET", search, nil, append(h, c.header...)...).want(t, c.name, c.status, c.says)
			if c.status == 200 && len(matchEntries(r.json)) != 1 {
				t.Errorf("want the person: %s", r.body)
			}
			if c.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge")
			}
		})
	}
	// The capability statement is open and says how to authenticate.
	if cs := ehr.do("GET", "/metadata", nil).want(t, "metadata", 200, ""); !strings.Contains(string(cs.body), "SMART-on-FHIR") {
		t.Errorf("metadata does not name SMART: %s", cs.body)
	}
	ehr.seen.validate(t)
	if strings.Contains(logs.String(), "eyJ") {
		t.Error("a token reached the logs")
	}
}
