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
		{"all", "unknown"},
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

func TestTable_IsVersionedAndComplete(t *testing.T) {
	if Version() == "" || Source() == "" {
		t.Errorf("version %q, source %q", Version(), Source())
	}
	duties := map[Duty]int{}
	for _, p := range All() {
		duties[p.Duty]++
		if p.Display == "" {
			t.Errorf("%s: no name", p.Code)
		}
	}
	if duties[Required] == 0 || duties[Optional] == 0 || duties[PushOnly] == 0 {
		t.Errorf("duties %v: every kind should occur", duties)
	}
	for code, want := range map[string]Duty{"T-TRTMNT": Required, "T-IAS": Required, "T-PYMNT": Optional, "T-PH-ECR": PushOnly} {
		if p, _ := Lookup(code); p.Duty != want {
			t.Errorf("%s duty = %q, want %q", code, p.Duty, want)
		}
	}
}

func TestParse_RefusesBrokenTables(t *testing.T) {
	for name, doc := range map[string]string{
		"no version":     `{"codeSystem":"` + CodeSystem + `","purposes":[{"code":"T-A","display":"A","duty":"optional"}]}`,
		"other system":   `{"version":"1","codeSystem":"1.2.3","purposes":[{"code":"T-A","display":"A","duty":"optional"}]}`,
		"bad duty":       `{"version":"1","codeSystem":"` + CodeSystem + `","purposes":[{"code":"T-A","display":"A","duty":"must"}]}`,
		"twice":          `{"version":"1","codeSystem":"` + CodeSystem + `","purposes":[{"code":"T-A","display":"A","duty":"optional"},{"code":"T-A","display":"A","duty":"optional"}]}`,
		"orphan":         `{"version":"1","codeSystem":"` + CodeSystem + `","purposes":[{"code":"T-A-B","display":"B","parent":"T-A","duty":"optional"}]}`,
		"all as a code":  `{"version":"1","codeSystem":"` + CodeSystem + `","purposes":[{"code":"all","display":"A","duty":"optional"}]}`,
		"not json":       `{`,
		"empty purposes": `{"version":"1","codeSystem":"` + CodeSystem + `","purposes":[]}`,
	} {
		if _, err := parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := parse(tableJSON); err != nil {
		t.Errorf("the embedded table: %v", err)
	}
}

func TestPermits_DefaultDeny(t *testing.T) {
	for _, tt := range []struct {
		list []string
		code string
		want bool
	}{
		{nil, "T-TRTMNT", false},
		{[]string{}, "T-TREAT", false},
		{[]string{"all"}, "T-TRTMNT", true},
		{[]string{"all"}, "T-GOVDTRM-SSD", true},
		{[]string{"T-TREAT"}, "T-PYMNT", false},
		{[]string{"T-TREAT", "T-PYMNT"}, "T-PYMNT", true},
		{[]string{"T-HCO"}, "T-HCO-CC", true},
		{[]string{"T-HCO-CC"}, "T-HCO", false},
		{[]string{"T-HCO-CC"}, "T-HCO-QAI", false},
		{[]string{"T-TREAT"}, "T-TRTMNT", true},
		{[]string{"T-TRTMNT"}, "T-TREAT", false},
		{[]string{"T-TREAT"}, "T-NOPE", false},
	} {
		if got := Permits(tt.list, tt.code); got != tt.want {
			t.Errorf("Permits(%v, %s) = %v, want %v", tt.list, tt.code, got, tt.want)
		}
	}
}

func TestValidateList(t *testing.T) {
	for _, tt := range []struct {
		list    []string
		wantAt  int
		wantErr string
	}{
		{nil, 0, ""},
		{[]string{"all"}, 0, ""},
		{[]string{"T-TREAT", "T-IAS"}, 0, ""},
		{[]string{"T-TREAT", "all"}, 1, "only entry"},
		{[]string{"all", "T-TREAT"}, 0, "only entry"},
		{[]string{"T-TREAT", "T-NOPE"}, 1, "unknown"},
		{[]string{"T-PH-ELR"}, 0, "push-only"},
		{[]string{"T-IAS", "T-IAS"}, 1, "twice"},
	} {
		at, err := ValidateList(tt.list)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%v: %v", tt.list, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || at != tt.wantAt {
			t.Errorf("%v: entry %d, %v; want entry %d, %q", tt.list, at, err, tt.wantAt, tt.wantErr)
		}
	}
}

func TestDescribe(t *testing.T) {
	for want, list := range map[string][]string{"none": nil, "all": {"all"}, "T-TREAT,T-IAS": {"T-TREAT", "T-IAS"}} {
		if got := Describe(list); got != want {
			t.Errorf("Describe(%v) = %q, want %q", list, got, want)
		}
	}
}
