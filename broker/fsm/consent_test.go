package fsm

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func setConsent(t *testing.T, d *qhinv1.ConsentDirective, at time.Time) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_CONSENT_SET, "", at, d)
}

func revokeConsent(t *testing.T, participant, patient string, at time.Time, purposes ...string) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_CONSENT_REVOKE, "", at, &qhinv1.ConsentRevoke{
		ParticipantId: participant, PatientId: patient, Purposes: purposes,
		RecordedBy: &qhinv1.ConsentRecorder{Actor: "spiffe://qhin.test/participant/" + participant}})
}

// TestConsent_Commands applies consent commands in turn and checks the
// directive each leaves, its result and that it restricts.
func TestConsent_Commands(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	a.apply(register(t, "p1", ""))
	a.apply(register(t, "p2", ""))
	key := ConsentKey{"p1", "mrn-1"}
	steps := []struct {
		name string
		cmd  *qhinv1.Command
		// want is the directive after the step (nil: none); err the
		// refusal.
		want *qhinv1.ConsentDirective
		err  error
	}{
		{"revoke one purpose creates the directive", revokeConsent(t, "p1", "mrn-1", t0, "T-PYMNT"),
			&qhinv1.ConsentDirective{DeniedPurposes: []string{"T-PYMNT"}}, nil},
		{"revoke the same purpose again keeps one entry", revokeConsent(t, "p1", "mrn-1", t0, "T-PYMNT", "T-HCO"),
			&qhinv1.ConsentDirective{DeniedPurposes: []string{"T-PYMNT", "T-HCO"}}, nil},
		{"set replaces whole", setConsent(t, &qhinv1.ConsentDirective{ParticipantId: "p1", PatientId: "mrn-1", OptOut: true,
			AllowedPurposes: []string{"T-TRTMNT", "T-IAS"}, EmergencyOverride: true}, t0),
			&qhinv1.ConsentDirective{OptOut: true, AllowedPurposes: []string{"T-TRTMNT", "T-IAS"}, EmergencyOverride: true}, nil},
		{"revoke a purpose drops it from the allowed", revokeConsent(t, "p1", "mrn-1", t0, "T-TRTMNT"),
			&qhinv1.ConsentDirective{OptOut: true, AllowedPurposes: []string{"T-IAS"}, DeniedPurposes: []string{"T-TRTMNT"}, EmergencyOverride: true}, nil},
		{"revoke all opts out and clears the allowed", revokeConsent(t, "p1", "mrn-1", t0),
			&qhinv1.ConsentDirective{OptOut: true, DeniedPurposes: []string{"T-TRTMNT"}, EmergencyOverride: true}, nil},
		{"unknown member", revokeConsent(t, "p9", "mrn-1", t0), nil, ErrNotFound},
		{"no patient id", revokeConsent(t, "p1", "", t0), nil, ErrInvalid},
		{"no participant id", setConsent(t, &qhinv1.ConsentDirective{PatientId: "mrn-1"}, t0), nil, ErrInvalid},
		{"empty purpose", setConsent(t, &qhinv1.ConsentDirective{ParticipantId: "p1", PatientId: "mrn-1", DeniedPurposes: []string{""}}, t0), nil, ErrInvalid},
		{"too many purposes", revokeConsent(t, "p1", "mrn-1", t0, slices.Repeat([]string{"T-PYMNT"}, MaxConsentPurposes+1)...), nil, ErrInvalid},
	}
	var last *qhinv1.ConsentDirective
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			at := t0.Add(time.Duration(i) * time.Minute)
			s.cmd.Time = timestamppb.New(at)
			r := a.apply(s.cmd)
			got, err := a.f.Consent(key)
			if err != nil {
				t.Fatal(err)
			}
			if s.err != nil {
				if !errors.Is(r.Err, s.err) {
					t.Fatalf("err %v, want %v", r.Err, s.err)
				}
				if r.Restricts {
					t.Error("a refused command restricts")
				}
				if last != nil && !sameDirective(got, last) {
					t.Errorf("a refused command changed the directive to %v", got)
				}
				return
			}
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			if !r.Restricts {
				t.Error("a consent write does not restrict: it would be acknowledged before every broker holds it")
			}
			if !sameDirective(got, s.want) {
				t.Errorf("directive %v, want %v", got, s.want)
			}
			if !got.Updated.AsTime().Equal(at) || got.ParticipantId != "p1" || got.PatientId != "mrn-1" {
				t.Errorf("directive %v: want the command's time %v and the key", got, at)
			}
			if res := r.Value.(*qhinv1.ConsentDirective); !sameDirective(res, got) {
				t.Errorf("result %v, stored %v", res, got)
			}
			last = got
		})
	}
	if d, err := a.f.Consent(ConsentKey{"p2", "mrn-1"}); err != nil || d != nil {
		t.Errorf("another member's patient of the same local id: %v, %v; want none", d, err)
	}
	// A patient id holding the separator does not reach another key.
	a.apply(revokeConsent(t, "p1", "mrn-1\x00x", t0))
	if d, _ := a.f.Consents([]ConsentKey{{"p1", "mrn-1\x00x"}, {"p1", "mrn-1"}, {"p1", "none"}}); len(d) != 2 {
		t.Errorf("consents %v, want 2", d)
	}
}

func sameDirective(a, b *qhinv1.ConsentDirective) bool {
	return a.OptOut == b.OptOut && a.EmergencyOverride == b.EmergencyOverride &&
		slices.Equal(a.DeniedPurposes, b.DeniedPurposes) && slices.Equal(a.AllowedPurposes, b.AllowedPurposes)
}

// TestConsent_OlderBrokerRefusesTheCommands: a broker of command version 2
// does not apply consent commands (the leader proposes them only once every
// broker applies version 3).
func TestConsent_OlderBrokerRefusesTheCommands(t *testing.T) {
	f, err := Open(t.TempDir()+"/state.db", Options{MaxCommandVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := &applier{t: t, f: f}
	a.apply(register(t, "p1", ""))
	cmd := revokeConsent(t, "p1", "mrn-1", t0)
	if cmd.Version != 3 {
		t.Errorf("consent command version %d, want 3", cmd.Version)
	}
	if r := a.apply(cmd); !errors.Is(r.Err, ErrUnknownCommand) {
		t.Errorf("version 2 broker applied a consent command: %v", r.Err)
	}
}

// TestOpen_SchemaThreeFileGetsTheConsentTable opens a file of the layout
// before consent: it gains the empty table and keeps its digests.
func TestOpen_SchemaThreeFileGetsTheConsentTable(t *testing.T) {
	path, _ := stateWith(t, 3)
	f, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := f.Digests()
	f.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketConsent); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		meta.Delete(digestKey(bucketConsent))
		return meta.Put(keySchema, u64(3))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("open a schema 3 file: %v", err)
	}
	defer f.Close()
	if got := f.Digests(); got != want {
		t.Errorf("digests %v, want %v", got.Map(), want.Map())
	}
	if d, err := f.Consent(ConsentKey{"p1", "x"}); d != nil || err != nil {
		t.Errorf("consent %v, %v", d, err)
	}
}

// TestConsent_SnapshotCarriesDirectives: a restored snapshot holds the
// directives, with the same digests.
func TestConsent_SnapshotCarriesDirectives(t *testing.T) {
	src := &applier{t: t, f: openFSM(t)}
	src.apply(register(t, "p1", ""))
	src.apply(revokeConsent(t, "p1", "mrn-1", t0, "T-PYMNT"))
	data := snapshotOf(t, src.f)
	dst := openFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	d, err := dst.Consent(ConsentKey{"p1", "mrn-1"})
	if err != nil || d == nil || !slices.Equal(d.DeniedPurposes, []string{"T-PYMNT"}) {
		t.Fatalf("restored directive %v, %v", d, err)
	}
	want, got := src.f.Digests(), dst.Digests()
	if diff := got.Diff(want); len(diff) != 0 || got.Tables[tableIndex(bucketConsent)].Count != 1 {
		t.Errorf("restored digests differ in %v (consent %v)", diff, got.Tables[tableIndex(bucketConsent)])
	}
}
