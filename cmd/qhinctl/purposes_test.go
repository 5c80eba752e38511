package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/openqhin/openqhin/broker/purpose"
)

func TestPurposes_TableListsEveryPurposeWithItsDutyAndTheVersion(t *testing.T) {
	out := runQhinctl(t, "purposes")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(purpose.All())+2 {
		t.Fatalf("%d lines, want a title, a header and %d purposes:\n%s", len(lines), len(purpose.All()), out)
	}
	if !strings.Contains(lines[0], "version "+purpose.Version()) {
		t.Errorf("title %q does not show the table's version %s", lines[0], purpose.Version())
	}
	for i, p := range purpose.All() {
		line := lines[i+2]
		f := strings.Fields(line)
		if f[0] != p.Code || !strings.Contains(line, p.Display) || f[len(f)-1] != string(p.Duty) {
			t.Errorf("line %q does not show %+v", line, p)
		}
		if p.Parent != "" && !strings.Contains(line, " "+p.Parent+" ") {
			t.Errorf("line %q does not show that %s refines %s", line, p.Code, p.Parent)
		}
	}
}

func TestPurposes_JSONIsTheTable(t *testing.T) {
	var got struct {
		Version    string        `json:"version"`
		CodeSystem string        `json:"codeSystem"`
		Purposes   []purposeJSON `json:"purposes"`
	}
	out := runQhinctl(t, "purposes", "-o", "json")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.CodeSystem != purpose.CodeSystem || got.Version != purpose.Version() {
		t.Errorf("code system %q, version %q", got.CodeSystem, got.Version)
	}
	all := purpose.All()
	if len(got.Purposes) != len(all) {
		t.Fatalf("%d purposes, want %d", len(got.Purposes), len(all))
	}
	duties := map[string]int{}
	for i, p := range all {
		want := purposeJSON{Code: p.Code, Display: p.Display, Parent: p.Parent, Duty: string(p.Duty)}
		if got.Purposes[i] != want {
			t.Errorf("purpose %d = %+v, want %+v", i, got.Purposes[i], want)
		}
		duties[got.Purposes[i].Duty]++
	}
	for _, d := range []purpose.Duty{purpose.Required, purpose.Optional, purpose.PushOnly} {
		if duties[string(d)] == 0 {
			t.Errorf("no %s purpose in the output: the test no longer checks that duty", d)
		}
	}
}
