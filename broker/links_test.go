package broker

import (
	"bytes"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// keyState is a state machine holding link keys, applied as Raft would.
type keyState struct {
	t   *testing.T
	f   *fsm.FSM
	idx uint64
}

func newKeyState(t *testing.T) *keyState {
	f, err := fsm.Open(filepath.Join(t.TempDir(), "fsm.db"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &keyState{t: t, f: f}
}

func (k *keyState) rotate(id uint32) {
	k.t.Helper()
	c, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_ROTATE_LINK_KEY, "", time.Now(),
		&qhinv1.LinkKey{Id: id, Secret: bytes.Repeat([]byte{byte(id)}, fsm.LinkKeySize), Keep: 2})
	if err != nil {
		k.t.Fatal(err)
	}
	data, _ := fsm.Encode(c)
	k.idx++
	if r := k.f.Apply(&raft.Log{Index: k.idx, Type: raft.LogCommand, Data: data}).(*fsm.Result); r.Err != nil {
		k.t.Fatal(r.Err)
	}
}

func TestLinks_SealAndOpen(t *testing.T) {
	st := newKeyState(t)
	var keys linkKeys
	now := time.Now()
	claims := &qhinv1.LinkClaims{Kind: qhinv1.LinkKind_LINK_KIND_PATIENT, InitiatorParticipantId: "p4", PurposeOfUse: "T-TRTMNT",
		ExpiresUnix: now.Add(time.Hour).Unix(), ParticipantId: "p2", PatientId: "p2-000042"}
	if _, err := keys.seal(st.f, claims); status.Code(err) != codes.Unavailable {
		t.Fatalf("sealing without a key: %v, want Unavailable", err)
	}
	st.rotate(1)
	link, err := keys.seal(st.f, claims)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, "q1.") || strings.Contains(link, "p2-000042") || strings.Contains(link, "T-TRTMNT") {
		t.Errorf("link %q is not opaque", link)
	}
	again, _ := keys.seal(st.f, claims)
	if again == link {
		t.Error("two links of the same claims are equal: the nonce is not random")
	}
	open := func(link string, kind qhinv1.LinkKind, initiator, purpose string, at time.Time) (*qhinv1.LinkClaims, error) {
		return keys.open(st.f, at, "links[0].link", link, kind, initiator, purpose)
	}
	got, err := open(link, qhinv1.LinkKind_LINK_KIND_PATIENT, "p4", "T-TRTMNT", now)
	if err != nil || got.PatientId != "p2-000042" || got.ParticipantId != "p2" {
		t.Fatalf("open: %v, %v", got, err)
	}

	raw, _ := base64.RawURLEncoding.DecodeString(link[3:])
	tampered := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 1
		return "q1." + base64.RawURLEncoding.EncodeToString(b)
	}
	for _, tc := range []struct {
		name, link, initiator, purpose string
		kind                           qhinv1.LinkKind
		at                             time.Time
		code                           codes.Code
		says                           string
	}{
		{"empty", "", "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "required"},
		{"no prefix", link[3:], "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "malformed"},
		{"not base64", "q1.!!!!", "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "malformed"},
		{"too short", "q1.AAAA", "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "malformed"},
		{"key id changed", tampered(3), "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "no longer holds"},
		{"nonce changed", tampered(10), "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "does not authenticate"},
		{"sealed bytes changed", tampered(len(raw) - 20), "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "does not authenticate"},
		{"tag changed", tampered(len(raw) - 1), "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.InvalidArgument, "does not authenticate"},
		{"other kind", link, "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_DOCUMENT, now, codes.InvalidArgument, "a patient link, where a document link goes"},
		{"expired", link, "p4", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now.Add(2 * time.Hour), codes.InvalidArgument, "expired"},
		{"other initiator", link, "p3", "T-TRTMNT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.PermissionDenied, "another member"},
		{"other purpose", link, "p4", "T-TREAT", qhinv1.LinkKind_LINK_KIND_PATIENT, now, codes.PermissionDenied, "issued for T-TRTMNT queries, not T-TREAT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := open(tc.link, tc.kind, tc.initiator, tc.purpose, tc.at)
			msg := status.Convert(err).Message()
			if status.Code(err) != tc.code || !strings.HasPrefix(msg, "links[0].link: ") || !strings.Contains(msg, tc.says) {
				t.Errorf("%v, want %v naming links[0].link saying %q", err, tc.code, tc.says)
			}
			if tc.link != "" && strings.Contains(msg, tc.link) {
				t.Errorf("message %q repeats the link", msg)
			}
		})
	}

	// After one rotation the old key still opens its links; after two it
	// is gone.
	st.rotate(2)
	if _, err := open(link, qhinv1.LinkKind_LINK_KIND_PATIENT, "p4", "T-TRTMNT", now); err != nil {
		t.Errorf("a link of the previous key: %v", err)
	}
	fresh, _ := keys.seal(st.f, claims)
	if rawFresh, _ := base64.RawURLEncoding.DecodeString(fresh[3:]); rawFresh[3] != 2 {
		t.Errorf("a new link is sealed under key %d, want the newest, 2", rawFresh[3])
	}
	st.rotate(3)
	if _, err := open(link, qhinv1.LinkKind_LINK_KIND_PATIENT, "p4", "T-TRTMNT", now); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a link of a dropped key: %v", err)
	}
}

func TestValidNPI(t *testing.T) {
	for npi, want := range map[string]bool{
		"1234567893":  true,
		"1245319599":  true,
		"1003000126":  true,
		"1234567890":  false,
		"1234567894":  false,
		"123456789":   false,
		"12345678930": false,
		"123456789a":  false,
		"":            false,
		"１２３４５６７８９３":  false,
	} {
		if got := ValidNPI(npi); got != want {
			t.Errorf("ValidNPI(%q) = %v, want %v", npi, got, want)
		}
	}
}

func TestCheckNPI_PerPurpose(t *testing.T) {
	for _, tc := range []struct {
		purpose, npi string
		ok           bool
	}{
		{"T-TRTMNT", "1234567893", true},
		{"T-TRTMNT", "", false},
		{"T-TRTMNT", "1234567890", false},
		{"T-TREAT", "", true},
		{"T-TREAT", "1234567890", false},
	} {
		err := checkNPI(tc.purpose, &qhinv1.Requester{Id: "u", Npi: tc.npi})
		if (err == nil) != tc.ok {
			t.Errorf("%s NPI %q: %v", tc.purpose, tc.npi, err)
		}
		if err != nil && (status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "requester.npi") ||
			(tc.npi != "" && strings.Contains(err.Error(), tc.npi))) {
			t.Errorf("%s NPI %q: %v, want InvalidArgument naming requester.npi without the value", tc.purpose, tc.npi, err)
		}
	}
}
