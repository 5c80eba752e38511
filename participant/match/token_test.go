package match

import (
	"slices"
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestLocatorTokens(t *testing.T) {
	key := []byte("network linkage key")
	base := &qhinv1.Demographics{Given: "Robert James", Family: "O'Connell", BirthDate: "1972-05-09", Gender: "male",
		Address: &qhinv1.Address{PostalCode: "02139"}}
	baseTokens := LocatorTokens(key, Normalize(base))
	if len(baseTokens) != 3 {
		t.Fatalf("%d tokens, want 3", len(baseTokens))
	}
	for _, tok := range baseTokens {
		for _, phi := range []string{"oconnell", "robert", "1972", "02139"} {
			if strings.Contains(tok, phi) {
				t.Errorf("token %s reveals %q", tok, phi)
			}
		}
	}
	tests := []struct {
		name   string
		d      *qhinv1.Demographics
		key    []byte
		shared int
	}{
		{"same person, nickname and accents", &qhinv1.Demographics{Given: "Bob", Family: "O’Connell", BirthDate: "1972-05-09", Gender: "male",
			Address: &qhinv1.Address{PostalCode: "02139-1234"}}, key, 3},
		{"typo in the family name", &qhinv1.Demographics{Given: "Robert", Family: "OConnel", BirthDate: "1972-05-09", Gender: "male",
			Address: &qhinv1.Address{PostalCode: "02139"}}, key, 2},
		{"moved", &qhinv1.Demographics{Given: "Robert", Family: "O'Connell", BirthDate: "1972-05-09", Gender: "male",
			Address: &qhinv1.Address{PostalCode: "10001"}}, key, 2},
		{"another person", &qhinv1.Demographics{Given: "Mary", Family: "Walsh", BirthDate: "1972-05-09", Gender: "female",
			Address: &qhinv1.Address{PostalCode: "02139"}}, key, 0},
		{"another network's key", base, []byte("other key"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := LocatorTokens(tt.key, Normalize(tt.d))
			shared := 0
			for _, tok := range got {
				if slices.Contains(baseTokens, tok) {
					shared++
				}
			}
			if shared != tt.shared {
				t.Errorf("%d tokens in common, want %d", shared, tt.shared)
			}
		})
	}
	if got := LocatorTokens(key, Normalize(&qhinv1.Demographics{Given: "Ann", Family: "Lee"})); got != nil {
		t.Errorf("no birth date gave tokens %v", got)
	}
}

func BenchmarkLocatorTokens(b *testing.B) {
	key := []byte("network linkage key")
	r := Normalize(&qhinv1.Demographics{Given: "Robert James", Family: "O'Connell", BirthDate: "1972-05-09", Gender: "male",
		Address: &qhinv1.Address{PostalCode: "02139"}})
	b.ReportAllocs()
	for b.Loop() {
		LocatorTokens(key, r)
	}
}
