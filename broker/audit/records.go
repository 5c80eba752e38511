package audit

import (
	"crypto/sha256"
	"encoding/base64"
)

// RecordRef is how a broker's ledger refers to a member's record of a
// patient (the member and its local patient id) without holding the id: a
// short digest. The accounting of disclosures computes the same reference
// to find the entries about a patient.
func RecordRef(participantID, patientID string) string {
	sum := sha256.Sum256([]byte(participantID + "\x00" + patientID))
	return "rec:" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// ActionWithheld records the records a broker kept out of an answer
// because the patient's consent directive does not permit the query's
// purpose.
const ActionWithheld = "withheld-by-consent"
