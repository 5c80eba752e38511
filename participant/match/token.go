package match

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TokenSize is the length of a record-locator token in bytes: an
// HMAC-SHA256 truncated to 128 bits, which keeps the locator small (16
// bytes a token instead of 32) while a collision between two of a billion
// tokens stays below one in 10^20 — and would only ask one member too many.
const TokenSize = 16

// Token is a record-locator token: a keyed hash of a combination of
// normalized demographics.
type Token = [TokenSize]byte

// MinLinkageKeyBytes is the shortest linkage key accepted: 256 bits.
const MinLinkageKeyBytes = 32

// LinkageKey is the network's linkage key. Every member holds it and
// computes the same tokens for the same demographics; brokers never see it,
// only its ID, so a broker cannot compute a token for a person it would
// like to find, nor tell whom a token stands for.
type LinkageKey struct {
	secret []byte
	id     string
}

// ErrLinkageKey reports a linkage key that cannot be used.
var ErrLinkageKey = errors.New("invalid linkage key")

// NewLinkageKey makes a linkage key of secret, which must be at least
// MinLinkageKeyBytes long.
func NewLinkageKey(secret []byte) (*LinkageKey, error) {
	if len(secret) < MinLinkageKeyBytes {
		return nil, fmt.Errorf("%w: it must be at least %d bytes", ErrLinkageKey, MinLinkageKeyBytes)
	}
	sum := sha256.Sum256(append([]byte("openqhin linkage key id\x00"), secret...))
	return &LinkageKey{secret: bytes.Clone(secret), id: hex.EncodeToString(sum[:8])}, nil
}

// ParseLinkageKey reads a linkage key written by [LinkageKey.MarshalText]:
// hex digits, with blank lines and lines starting with # ignored.
func ParseLinkageKey(text []byte) (*LinkageKey, error) {
	var digits strings.Builder
	for line := range strings.Lines(string(text)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		digits.WriteString(line)
	}
	secret, err := hex.DecodeString(digits.String())
	if err != nil {
		return nil, fmt.Errorf("%w: it must be written in hex digits", ErrLinkageKey)
	}
	return NewLinkageKey(secret)
}

// GenerateLinkageKey makes a new random 256-bit linkage key.
func GenerateLinkageKey() (*LinkageKey, error) {
	secret := make([]byte, MinLinkageKeyBytes)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return NewLinkageKey(secret)
}

// ID names the key without revealing it: 16 hex digits of a SHA-256 of the
// key. Tokens travel with it, so that tokens of different keys are never
// compared.
func (k *LinkageKey) ID() string { return k.id }

// MarshalText writes the key as a file holds it: a comment with its id,
// then the key in hex.
func (k *LinkageKey) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "# OpenQHIN network linkage key %s: keep it secret; members only, never brokers\n%s\n",
		k.id, hex.EncodeToString(k.secret)), nil
}

// String names the key by its id only.
func (k *LinkageKey) String() string { return "linkage key " + k.id }

// tokenKind is one combination of fields a token is computed over.
type tokenKind struct {
	tag    string
	fields []Field
}

// The token kinds. Each takes normalized fields, so that case, accents,
// punctuation, hyphens in family names, nicknames, phone formats and ZIP+4
// leave a token unchanged:
//
//	name   family name (parts joined), first letter of the canonical first
//	       name, birth date, gender — also with day and month swapped when
//	       both could be a month, so that a record keyed either way shares it
//	sound  NYSIIS codes of the family name and the canonical first name,
//	       birth date (spelling variants of both names)
//	phone  last 10 digits of the phone, birth date (a married or misspelled
//	       name)
//	place  canonical first name, birth date, postal code (a married name,
//	       without a phone)
var (
	kindName  = tokenKind{"name", []Field{FieldFamily, FieldGiven, FieldBirthDate, FieldGender}}
	kindSound = tokenKind{"sound", []Field{FieldFamily, FieldGiven, FieldBirthDate}}
	kindPhone = tokenKind{"phone", []Field{FieldPhone, FieldBirthDate}}
	kindPlace = tokenKind{"place", []Field{FieldGiven, FieldBirthDate, FieldPostalCode}}
)

// MaxTokens is the most tokens [LinkageKey.Tokens] returns for a record.
const MaxTokens = 5

// Tokens returns the record-locator tokens of r, sorted and without
// duplicates. A combination with a missing field gives no token; a record
// without a birth date gives none at all.
func (k *LinkageKey) Tokens(r Record) []Token {
	return k.tokens(r, nil)
}

// ConfirmedTokens returns the tokens of a query q that a responder may
// record for the patient it matched with pair: those whose every field the
// comparison found agreeing at some level (not different, not missing).
// A query that differs from the patient in a field gives no token of that
// field, so that nobody can make a member claim a token for demographics
// its patient does not have.
func (k *LinkageKey) ConfirmedTokens(q Record, pair Pair) []Token {
	return k.tokens(q, func(kind tokenKind) bool {
		for _, f := range kind.fields {
			l := pair.Levels[f]
			if l == Missing || int(l) == len(fieldLevels[f])-1 {
				return false
			}
		}
		return true
	})
}

// QueryTokens returns the tokens an initiator sends with a discovery query
// for demographics d, or nil when d gives none (no birth date).
func (k *LinkageKey) QueryTokens(d *qhinv1.Demographics) *qhinv1.LocatorTokens {
	toks := k.Tokens(Normalize(d))
	if len(toks) == 0 {
		return nil
	}
	out := &qhinv1.LocatorTokens{KeyId: k.id, Tokens: make([][]byte, len(toks))}
	for i := range toks {
		out.Tokens[i] = toks[i][:]
	}
	return out
}

func (k *LinkageKey) tokens(r Record, keep func(tokenKind) bool) []Token {
	if !r.HasBirthDate() {
		return nil
	}
	t := tokenizer{mac: hmac.New(sha256.New, k.secret)}
	birth := birthText(r.BirthYear, r.BirthMonth, r.BirthDay)
	first := r.CanonicalFirstName()
	family := strings.ReplaceAll(r.Family, " ", "")
	add := func(kind tokenKind, parts ...string) {
		if keep != nil && !keep(kind) {
			return
		}
		for _, p := range parts {
			if p == "" {
				return
			}
		}
		t.add(kind.tag, parts...)
	}
	if first != "" {
		initial := prefixRunes(first, 1)
		add(kindName, family, initial, birth, r.Gender)
		if r.BirthDay <= 12 && r.BirthDay != r.BirthMonth && r.BirthDay > 0 {
			add(kindName, family, initial, birthText(r.BirthYear, r.BirthDay, r.BirthMonth), r.Gender)
		}
		add(kindSound, nysiis(family), nysiis(first), birth)
		add(kindPlace, first, birth, prefixRunes(r.PostalCode, 5))
	}
	phone := r.Phone
	if len(phone) > 10 {
		phone = phone[len(phone)-10:]
	}
	add(kindPhone, phone, birth)
	slices.SortFunc(t.out, func(a, b Token) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(t.out)
}

func birthText(y, m, d int) string {
	return strconv.Itoa(y*10000 + m*100 + d)
}

type tokenizer struct {
	mac hash.Hash
	out []Token
}

// add appends the token of a kind's fields: the fields are length-prefixed,
// so that no two lists of fields hash alike.
func (t *tokenizer) add(tag string, parts ...string) {
	t.mac.Reset()
	var buf [96]byte
	b := append(buf[:0], "openqhin-rls-v1|"...)
	b = append(b, tag...)
	for _, p := range parts {
		b = append(b, '|')
		b = strconv.AppendInt(b, int64(len(p)), 10)
		b = append(b, ':')
		b = append(b, p...)
	}
	t.mac.Write(b)
	var sum [sha256.Size]byte
	var tok Token
	copy(tok[:], t.mac.Sum(sum[:0]))
	t.out = append(t.out, tok)
}
