package fsm

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The consent table holds patients' consent directives, keyed by the
// patient's home member and its local patient id:
//
//	consent   participant id | 0x00 | patient id  →  ConsentDirective
//
// What a directive allows is decided in broker/consent; the table only
// stores. Every consent write withdraws access or may (a revocation, or a
// directive replaced while an earlier refusal is still being confirmed), so
// every one is a restricting write: it is acknowledged once every broker
// still answering queries holds it (cluster.Node.Apply).

// MaxConsentPurposes caps each purpose list of a directive.
const MaxConsentPurposes = 64

func init() {
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_CONSENT_SET, handler{
		newPayload: func() proto.Message { return new(qhinv1.ConsentDirective) },
		newResult:  func() proto.Message { return new(qhinv1.ConsentDirective) },
		apply:      applySetConsent,
		since:      3,
	})
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_CONSENT_REVOKE, handler{
		newPayload: func() proto.Message { return new(qhinv1.ConsentRevoke) },
		newResult:  func() proto.Message { return new(qhinv1.ConsentDirective) },
		apply:      applyRevokeConsent,
		since:      3,
	})
}

// ConsentKey names a patient at its home member.
type ConsentKey struct {
	ParticipantID string
	PatientID     string
}

func (k ConsentKey) bytes() []byte {
	return append(append(append(make([]byte, 0, len(k.ParticipantID)+1+len(k.PatientID)), k.ParticipantID...), 0), k.PatientID...)
}

// checkConsentKey refuses an empty id, and a patient of a member the
// directory does not hold.
func checkConsentKey(t *txn, k ConsentKey) error {
	switch {
	case k.ParticipantID == "":
		return fmt.Errorf("%w: participant id required", ErrInvalid)
	case k.PatientID == "":
		return fmt.Errorf("%w: patient id required", ErrInvalid)
	case bytes.IndexByte([]byte(k.ParticipantID), 0) >= 0:
		return fmt.Errorf("%w: participant id holds a NUL byte", ErrInvalid)
	case t.get(bucketParticipants, []byte(k.ParticipantID)) == nil:
		return fmt.Errorf("participant %s: %w", k.ParticipantID, ErrNotFound)
	}
	return nil
}

func checkConsentPurposes(lists ...[]string) error {
	for _, l := range lists {
		if len(l) > MaxConsentPurposes {
			return fmt.Errorf("%w: at most %d purposes per list", ErrInvalid, MaxConsentPurposes)
		}
		if slices.Contains(l, "") {
			return fmt.Errorf("%w: an empty purpose code", ErrInvalid)
		}
	}
	return nil
}

func getConsent(t *txn, key []byte) (*qhinv1.ConsentDirective, error) {
	v := t.get(bucketConsent, key)
	if v == nil {
		return nil, nil
	}
	d := new(qhinv1.ConsentDirective)
	if err := proto.Unmarshal(v, d); err != nil {
		return nil, &storageError{fmt.Errorf("%w: consent directive: %v", ErrDamaged, err)}
	}
	return d, nil
}

func putConsent(t *txn, key []byte, d *qhinv1.ConsentDirective) (proto.Message, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
	if err != nil {
		return nil, err
	}
	if err := t.put(bucketConsent, key, b); err != nil {
		return nil, &storageError{err}
	}
	t.restrict()
	return d, nil
}

// applySetConsent replaces a patient's directive.
func applySetConsent(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	d := payload.(*qhinv1.ConsentDirective)
	k := ConsentKey{d.ParticipantId, d.PatientId}
	if err := checkConsentKey(t, k); err != nil {
		return nil, err
	}
	if err := checkConsentPurposes(d.DeniedPurposes, d.AllowedPurposes); err != nil {
		return nil, err
	}
	d.Updated = cmd.Time
	return putConsent(t, k.bytes(), d)
}

// applyRevokeConsent withdraws purposes, or all exchange, from a patient's
// directive, creating it when there is none.
func applyRevokeConsent(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	r := payload.(*qhinv1.ConsentRevoke)
	k := ConsentKey{r.ParticipantId, r.PatientId}
	if err := checkConsentKey(t, k); err != nil {
		return nil, err
	}
	if err := checkConsentPurposes(r.Purposes); err != nil {
		return nil, err
	}
	d, err := getConsent(t, k.bytes())
	if err != nil {
		return nil, err
	}
	if d == nil {
		d = &qhinv1.ConsentDirective{ParticipantId: r.ParticipantId, PatientId: r.PatientId}
	}
	if len(r.Purposes) == 0 {
		d.OptOut, d.AllowedPurposes = true, nil
	}
	for _, c := range r.Purposes {
		d.AllowedPurposes = slices.DeleteFunc(d.AllowedPurposes, func(a string) bool { return a == c })
		if !slices.Contains(d.DeniedPurposes, c) {
			d.DeniedPurposes = append(d.DeniedPurposes, c)
		}
	}
	if len(d.DeniedPurposes) > MaxConsentPurposes {
		return nil, fmt.Errorf("%w: at most %d purposes per list", ErrInvalid, MaxConsentPurposes)
	}
	d.RecordedBy, d.Updated = r.RecordedBy, cmd.Time
	return putConsent(t, k.bytes(), d)
}

// Consent returns a patient's directive, or nil when there is none.
func (f *FSM) Consent(k ConsentKey) (*qhinv1.ConsentDirective, error) {
	out, err := f.Consents([]ConsentKey{k})
	if err != nil {
		return nil, err
	}
	return out[k], nil
}

// Consents returns the directives of the patients that have one, read in
// one transaction.
func (f *FSM) Consents(keys []ConsentKey) (map[ConsentKey]*qhinv1.ConsentDirective, error) {
	out := map[ConsentKey]*qhinv1.ConsentDirective{}
	if len(keys) == 0 {
		return out, nil
	}
	err := f.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConsent)
		for _, k := range keys {
			v := b.Get(k.bytes())
			if v == nil {
				continue
			}
			d := new(qhinv1.ConsentDirective)
			if err := proto.Unmarshal(v, d); err != nil {
				return fmt.Errorf("%w: consent directive: %v", ErrDamaged, err)
			}
			out[k] = d
		}
		return nil
	})
	return out, err
}
