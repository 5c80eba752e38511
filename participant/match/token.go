package match

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// LocatorTokens returns the record-locator tokens of a record: keyed hashes
// (HMAC-SHA256 under the network's linkage key) of a few combinations of
// normalized demographics, chosen like the index's blocking keys so that a
// typo or a nickname in one field still leaves a token in common:
//
//	family name, canonical first name, birth date
//	family name's Soundex code, birth date, gender
//	canonical first name, birth date, postal code
//
// A combination with a missing field gives no token. Brokers store tokens,
// never the demographics, and cannot compute them: they do not hold the key.
func LocatorTokens(key []byte, r Record) []string {
	if !r.HasBirthDate() {
		return nil
	}
	birth := fmt.Sprintf("%04d-%02d-%02d", r.BirthYear, r.BirthMonth, r.BirthDay)
	first := r.CanonicalFirstName()
	var parts [][]string
	if r.Family != "" && first != "" {
		parts = append(parts, []string{"name", r.Family, first, birth})
	}
	if r.Family != "" && r.Gender != "" {
		parts = append(parts, []string{"sound", string(appendSoundex(nil, r.Family)), birth, r.Gender})
	}
	if first != "" && r.PostalCode != "" {
		parts = append(parts, []string{"place", first, birth, r.PostalCode})
	}
	out := make([]string, 0, len(parts))
	mac := hmac.New(sha256.New, key)
	for _, p := range parts {
		mac.Reset()
		mac.Write([]byte("qhin-rls-v1"))
		for _, f := range p {
			// Length-prefixed, so that no two field lists hash alike.
			fmt.Fprintf(mac, "|%d:%s", len(f), f)
		}
		out = append(out, hex.EncodeToString(mac.Sum(nil)))
	}
	return out
}
