package match

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func testKey(t testing.TB, seed byte) *LinkageKey {
	t.Helper()
	k, err := NewLinkageKey(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func shared(a, b []Token) int {
	n := 0
	for _, x := range a {
		for _, y := range b {
			if x == y {
				n++
				break
			}
		}
	}
	return n
}

var ellen = &qhinv1.Demographics{Given: "Ellen Marie", Family: "Vasquez-Whitford", BirthDate: "1958-11-03", Gender: "female",
	Phone: "773-555-0188", Address: &qhinv1.Address{Lines: []string{"12 Elm St"}, PostalCode: "60614"}}

func TestTokens_NormalizationVariantsShareTokensAndStrangersDoNot(t *testing.T) {
	key := testKey(t, 1)
	base := key.Tokens(Normalize(ellen))
	// name, name with day and month swapped, sound, place, phone.
	if len(base) != MaxTokens {
		t.Fatalf("%d tokens, want %d", len(base), MaxTokens)
	}
	tests := []struct {
		name   string
		d      *qhinv1.Demographics
		shared int
	}{
		{"case, accents, hyphen as space, ZIP+4, phone format", &qhinv1.Demographics{Given: "ÉLLEN", Family: "vasquez whitford",
			BirthDate: "19581103", Gender: "F", Phone: "(773) 555 0188", Address: &qhinv1.Address{PostalCode: "60614-2231"}}, 5},
		{"family name joined, no phone", &qhinv1.Demographics{Given: "Ellen", Family: "VasquezWhitford", BirthDate: "1958-11-03",
			Gender: "female", Address: &qhinv1.Address{PostalCode: "60614"}}, 4},
		{"typo in the first name, moved", &qhinv1.Demographics{Given: "Elen", Family: "Vasquez Whitford", BirthDate: "1958-11-03",
			Gender: "female", Phone: "+1 773 555 0188", Address: &qhinv1.Address{PostalCode: "60657"}}, 4},
		{"married name, same phone", &qhinv1.Demographics{Given: "Ellen", Family: "Okafor", BirthDate: "1958-11-03",
			Gender: "female", Phone: "7735550188", Address: &qhinv1.Address{PostalCode: "10001"}}, 1},
		{"married name, same postal code", &qhinv1.Demographics{Given: "Ellen", Family: "Okafor", BirthDate: "1958-11-03",
			Gender: "female", Address: &qhinv1.Address{PostalCode: "60614"}}, 1},
		// Each side's name token, and its swapped one, is the other's.
		{"day and month swapped", &qhinv1.Demographics{Given: "Ellen", Family: "Vasquez-Whitford", BirthDate: "1958-03-11",
			Gender: "female"}, 2},
		{"another person with the same birth date", &qhinv1.Demographics{Given: "Mary", Family: "Walsh", BirthDate: "1958-11-03",
			Gender: "female", Phone: "312-555-0100", Address: &qhinv1.Address{PostalCode: "60614"}}, 0},
		{"a relative: same family name, other birth date", &qhinv1.Demographics{Given: "Ellen", Family: "Vasquez-Whitford",
			BirthDate: "1985-02-14", Gender: "female", Address: &qhinv1.Address{PostalCode: "60614"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := key.Tokens(Normalize(tt.d))
			if n := shared(base, got); n != tt.shared {
				t.Errorf("%d tokens in common, want %d", n, tt.shared)
			}
		})
	}
	t.Run("nickname", func(t *testing.T) {
		bob := key.Tokens(Normalize(&qhinv1.Demographics{Given: "Bob", Family: "O'Connell", BirthDate: "1972-05-29", Gender: "male"}))
		robert := key.Tokens(Normalize(&qhinv1.Demographics{Given: "Robert", Family: "OConnell", BirthDate: "1972-05-29", Gender: "male"}))
		if shared(bob, robert) != 2 {
			t.Errorf("Bob and Robert O'Connell share %d tokens, want 2 (name and sound)", shared(bob, robert))
		}
	})
	t.Run("another network's key", func(t *testing.T) {
		if n := shared(base, testKey(t, 2).Tokens(Normalize(ellen))); n != 0 {
			t.Errorf("%d tokens in common under another key", n)
		}
	})
	t.Run("no birth date", func(t *testing.T) {
		if got := key.Tokens(Normalize(&qhinv1.Demographics{Given: "Ann", Family: "Lee", Gender: "female", Phone: "617-555-0100"})); got != nil {
			t.Errorf("no birth date gave tokens %x", got)
		}
	})
	for _, tok := range base {
		for _, phi := range []string{"vasquez", "ellen", "1958", "60614", "0188"} {
			if strings.Contains(hex.EncodeToString(tok[:]), phi) || bytes.Contains(tok[:], []byte(phi)) {
				t.Errorf("token %x reveals %q", tok, phi)
			}
		}
	}
}

func TestConfirmedTokens_OnlyFieldsThatAgree(t *testing.T) {
	key := testKey(t, 1)
	patient := Normalize(ellen)
	// The query agrees on the names and birth date, not on the phone: a
	// responder that matched it records no phone token for its patient.
	q := Normalize(&qhinv1.Demographics{Given: "Elen", Family: "Vasquez Whitford", BirthDate: "1958-11-03", Gender: "female",
		Phone: "312-555-0100", Address: &qhinv1.Address{PostalCode: "60614"}})
	pair := DefaultModel().Compare(q, patient)
	got := key.ConfirmedTokens(q, pair)
	all := key.Tokens(q)
	if len(all) != 5 || len(got) != 4 {
		t.Fatalf("%d confirmed of %d tokens, want 4 of 5", len(got), len(all))
	}
	phone := key.Tokens(Record{Phone: q.Phone, BirthYear: 1958, BirthMonth: 11, BirthDay: 3})
	if len(phone) != 1 || shared(got, phone) != 0 {
		t.Errorf("the phone token was confirmed")
	}
}

func TestLinkageKey_IDAndText(t *testing.T) {
	k := testKey(t, 7)
	if len(k.ID()) != 16 || strings.Trim(k.ID(), "0123456789abcdef") != "" {
		t.Errorf("id %q is not 16 lowercase hex digits", k.ID())
	}
	text, _ := k.MarshalText()
	back, err := ParseLinkageKey(text)
	if err != nil || back.ID() != k.ID() {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if strings.Contains(k.String(), hex.EncodeToString(k.secret)) {
		t.Error("String reveals the key")
	}
	for _, bad := range []string{"", "abc", "zz" + strings.Repeat("00", 32), strings.Repeat("00", 31)} {
		if _, err := ParseLinkageKey([]byte(bad)); err == nil {
			t.Errorf("key %q accepted", bad)
		} else if strings.Contains(err.Error(), bad) && bad != "" {
			t.Errorf("error %q echoes the key", err)
		}
	}
	g1, _ := GenerateLinkageKey()
	g2, _ := GenerateLinkageKey()
	if g1.ID() == g2.ID() {
		t.Error("two generated keys have one id")
	}
}

func BenchmarkTokens(b *testing.B) {
	key := testKey(b, 1)
	r := Normalize(ellen)
	b.ReportAllocs()
	for b.Loop() {
		key.Tokens(r)
	}
}
