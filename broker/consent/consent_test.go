package consent

import (
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestDecide(t *testing.T) {
	optOut := &qhinv1.ConsentDirective{OptOut: true}
	optOutBTG := &qhinv1.ConsentDirective{OptOut: true, EmergencyOverride: true}
	optOutButTreatment := &qhinv1.ConsentDirective{OptOut: true, AllowedPurposes: []string{"T-TREAT"}}
	denyHCO := &qhinv1.ConsentDirective{DeniedPurposes: []string{"T-HCO"}, AllowedPurposes: []string{"T-HCO-PTSAFETY"}}
	denyTreatBTG := &qhinv1.ConsentDirective{DeniedPurposes: []string{"T-TREAT"}, EmergencyOverride: true}
	for _, tc := range []struct {
		name      string
		d         *qhinv1.ConsentDirective
		code      string
		emergency bool
		want      Decision
	}{
		{"no directive", nil, "T-PYMNT", false, Permit},
		{"empty directive", &qhinv1.ConsentDirective{}, "T-IAS", false, Permit},
		{"opt-out", optOut, "T-TRTMNT", false, Deny},
		{"opt-out, emergency without override", optOut, "T-TRTMNT", true, Deny},
		{"opt-out, emergency with override", optOutBTG, "T-TRTMNT", true, Emergency},
		{"opt-out, override, no emergency", optOutBTG, "T-TRTMNT", false, Deny},
		{"opt-out, override, emergency on payment", optOutBTG, "T-PYMNT", true, Deny},
		{"opt-out but treatment: sub-code", optOutButTreatment, "T-TRTMNT", false, Permit},
		{"opt-out but treatment: other purpose", optOutButTreatment, "T-IAS", false, Deny},
		{"denied parent covers sub-code", denyHCO, "T-HCO-CC", false, Deny},
		{"allowed sub-code beats denied parent", denyHCO, "T-HCO-PTSAFETY", false, Permit},
		{"denied parent itself", denyHCO, "T-HCO", false, Deny},
		{"purpose no entry names", denyHCO, "T-TRTMNT", false, Permit},
		{"denied treatment, emergency override", denyTreatBTG, "T-TRTMNT", true, Emergency},
		{"unknown code under opt-out", optOut, "T-NOPE", false, Deny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.d, tc.code, tc.emergency); got != tc.want {
				t.Errorf("Decide = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidateEmergency(t *testing.T) {
	for _, tc := range []struct {
		code      string
		emergency bool
		reason    string
		field     string
	}{
		{"T-TRTMNT", false, "", ""},
		{"T-TRTMNT", true, "unconscious in the ED", ""},
		{"T-TREAT", true, "unconscious in the ED", ""},
		{"T-TRTMNT", true, "", "emergency_reason"},
		{"T-PYMNT", true, "because", "emergency"},
		{"T-IAS", true, "", "emergency"},
		{"T-TRTMNT", false, "a reason without the flag", "emergency_reason"},
	} {
		field, err := ValidateEmergency(tc.code, tc.emergency, tc.reason)
		if field != tc.field || (err != nil) != (tc.field != "") {
			t.Errorf("ValidateEmergency(%s, %v, %q) = %q, %v; want field %q", tc.code, tc.emergency, tc.reason, field, err, tc.field)
		}
	}
}
