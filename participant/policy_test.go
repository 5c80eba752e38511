package participant

import (
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestParseLabelPolicy(t *testing.T) {
	for _, tc := range []struct {
		rule    string
		wantErr string // "" means valid
	}{
		{"ETH=T-TRTMNT", ""},
		{"HIV=T-TRTMNT,T-PYMNT", ""},
		{"PSY=all", ""},
		{"ETH", "LABEL=PURPOSE"},
		{"=T-TRTMNT", "label"},
		{"ETH=", "purpose"},
		{"ETH=T-NOPE", "purpose"},
		{"E TH=T-TRTMNT", "label"},
		{"N=T-TRTMNT", "never withholds"},
	} {
		_, err := ParseLabelPolicy([]string{tc.rule})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.rule, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one about %q", tc.rule, err, tc.wantErr)
		}
	}
	// A rule's value is never echoed: it may be anything a typo made it.
	if _, err := ParseLabelPolicy([]string{"ETH=SECRET-VALUE"}); err == nil || strings.Contains(err.Error(), "SECRET-VALUE") {
		t.Errorf("bad purpose: error %v echoes the value or is nil", err)
	}
}

// TestLabelPolicy_Withholds is the decision table: label × purpose × policy.
func TestLabelPolicy_Withholds(t *testing.T) {
	none := LabelPolicy{}
	ethTreat, err := ParseLabelPolicy([]string{"ETH=T-TRTMNT", "HIV=T-TREAT", "PSY=all"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		policy  LabelPolicy
		labels  []string
		purpose string
		want    bool
	}{
		{"unlabelled", none, nil, "T-TRTMNT", false},
		{"normal confidentiality", none, []string{"N"}, "T-PYMNT", false},
		{"low and moderate", none, []string{"L", "M", "U"}, "T-PYMNT", false},
		{"ETH by default, treatment", none, []string{"ETH"}, "T-TRTMNT", true},
		{"HIV by default", none, []string{"HIV"}, "T-TRTMNT", true},
		{"PSY by default", none, []string{"PSY"}, "T-IAS", true},
		{"SDV by default", none, []string{"SDV"}, "T-TRTMNT", true},
		{"restricted by default", none, []string{"R"}, "T-TRTMNT", true},
		{"very restricted by default", none, []string{"V"}, "T-TRTMNT", true},
		{"unknown label fails closed", none, []string{"XYZ"}, "T-TRTMNT", true},
		{"ETH allowed for treatment", ethTreat, []string{"ETH"}, "T-TRTMNT", false},
		{"ETH allowed for treatment only, payment", ethTreat, []string{"ETH"}, "T-PYMNT", true},
		{"ETH allowed, but also R", ethTreat, []string{"ETH", "R"}, "T-TRTMNT", true},
		{"ETH allowed, with N", ethTreat, []string{"N", "ETH"}, "T-TRTMNT", false},
		{"HIV allowed for T-TREAT covers a sub-code", ethTreat, []string{"HIV"}, "T-TRTMNT", false},
		{"HIV allowed for T-TREAT, not payment", ethTreat, []string{"HIV"}, "T-PYMNT", true},
		{"PSY allowed for all", ethTreat, []string{"PSY"}, "T-IAS", false},
		{"SDV still withheld under a policy of others", ethTreat, []string{"SDV"}, "T-TRTMNT", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.Withholds(tt.labels, tt.purpose); got != tt.want {
				t.Errorf("Withholds(%v, %s) = %v, want %v", tt.labels, tt.purpose, got, tt.want)
			}
		})
	}
}

func TestRestrictionWithholds(t *testing.T) {
	tests := []struct {
		name    string
		r       *qhinv1.Restriction
		purpose string
		want    bool
	}{
		{"none", nil, "T-TRTMNT", false},
		{"all exchange", &qhinv1.Restriction{PatientId: "x"}, "T-TRTMNT", true},
		{"payment only, asked for payment", &qhinv1.Restriction{Purposes: []string{"T-PYMNT"}}, "T-PYMNT", true},
		{"payment only, asked for treatment", &qhinv1.Restriction{Purposes: []string{"T-PYMNT"}}, "T-TRTMNT", false},
		{"T-TREAT covers T-TRTMNT", &qhinv1.Restriction{Purposes: []string{"T-TREAT"}}, "T-TRTMNT", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := restrictionWithholds(tt.r, tt.purpose); got != tt.want {
				t.Errorf("restrictionWithholds = %v, want %v", got, tt.want)
			}
		})
	}
}
