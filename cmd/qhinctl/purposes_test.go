package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/openqhin/openqhin/broker/purpose"
)

func TestPurposes_TableListsEveryPurposeWithItsDuty(t *testing.T) {
	out := runQhinctl(t, "purposes")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(purpose.All())+1 {
		t.Fatalf("%d lines, want a header and %d purposes:\n%s", len(lines), len(purpose.All()), out)
	}
	for i, p := range purpose.All() {
		f := strings.Fields(lines[i+1])
		if f[0] != p.Code || !strings.Contains(lines[i+1], p.Display) || !strings.Contains(lines[i+1], string(p.Duty)+" answer") {
			t.Errorf("line %q does not show %+v", lines[i+1], p)
		}
		if got := strings.Contains(lines[i+1], "never a query"); got != p.PushOnly {
			t.Errorf("%s: push-only shown %v, want %v", p.Code, got, p.PushOnly)
		}
	}
}

func TestPurposes_JSONIsTheTable(t *testing.T) {
	var got struct {
		CodeSystem string        `json:"codeSystem"`
		Purposes   []purposeJSON `json:"purposes"`
	}
	out := runQhinctl(t, "purposes", "-o", "json")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.CodeSystem != purpose.CodeSystem {
		t.Errorf("code system %q", got.CodeSystem)
	}
	all := purpose.All()
	if len(got.Purposes) != len(all) {
		t.Fatalf("%d purposes, want %d", len(got.Purposes), len(all))
	}
	pushOnly := 0
	for i, p := range all {
		want := purposeJSON{Code: p.Code, Display: p.Display, Duty: string(p.Duty), PushOnly: p.PushOnly}
		if got.Purposes[i] != want {
			t.Errorf("purpose %d = %+v, want %+v", i, got.Purposes[i], want)
		}
		if p.PushOnly {
			pushOnly++
		}
	}
	if pushOnly == 0 {
		t.Error("no push-only purpose in the table: the test no longer checks that flag")
	}
}
