package purpose

import (
	"strings"
	"testing"
)

func TestValidateQuery(t *testing.T) {
	tests := []struct {
		code    string
		wantErr string
	}{
		{"T-TRTMNT", ""},
		{"T-TREAT", ""},
		{"T-IAS", ""},
		{"T-GOVDTRM-SSD", ""},
		{"", "required"},
		{"TREATMENT", "unknown"},
		{"t-trtmnt", "unknown"},
		{"Zebulon Quackenbush 1953-11-29", "unknown"},
		{"T-PH-ECR", "push-only"},
		{"T-PH-ELR", "push-only"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			err := ValidateQuery(tt.code)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
			if _, known := Lookup(tt.code); !known && tt.code != "" && strings.Contains(err.Error(), tt.code) {
				t.Errorf("err = %v repeats the caller's code", err)
			}
		})
	}
}

func TestTable_CodesAreUniqueAndComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range All() {
		if seen[p.Code] {
			t.Errorf("duplicate code %s", p.Code)
		}
		seen[p.Code] = true
		if p.Display == "" || p.Duty == "" {
			t.Errorf("%s: incomplete entry %+v", p.Code, p)
		}
	}
	for _, must := range []string{"T-TRTMNT", "T-IAS"} {
		if p, _ := Lookup(must); p.Duty != Must {
			t.Errorf("%s duty = %q, want must", must, p.Duty)
		}
	}
}

func TestPermits(t *testing.T) {
	if !Permits(nil, "T-TRTMNT") {
		t.Error("empty list must permit every purpose")
	}
	if Permits([]string{"T-TREAT"}, "T-PYMNT") {
		t.Error("list without the code permits it")
	}
	if !Permits([]string{"T-TREAT", "T-PYMNT"}, "T-PYMNT") {
		t.Error("list with the code refuses it")
	}
}
