package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/openqhin/openqhin/pki"
)

func TestConfig_SaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(t.TempDir(), "elsewhere")
	c := &Config{
		TrustDomain: "qhin.test",
		Brokers:     []string{"127.0.0.1:7001", "127.0.0.1:7002"},
		Operator:    &Identity{ID: "ops", SVIDDir: "svids/operator"},
		Participant: &Identity{ID: "clinic-a", SVIDDir: "svids/clinic-a", Endpoint: "127.0.0.1:9001"},
		Participants: map[string]*Identity{
			"clinic-b": {SVIDDir: abs},
			"clinic-c": {SVIDDir: "../svids/clinic-c"},
		},
		CA: "ca",
	}
	path := filepath.Join(dir, "conf", "qhinctl.yaml")
	if err := c.Save(path); err != nil {
		t.Fatalf("Save: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode = %v, want 0600", fi.Mode().Perm())
	}

	got, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	base := filepath.Join(dir, "conf")
	checks := []struct{ what, got, want string }{
		{"trust_domain", got.TrustDomain, "qhin.test"},
		{"brokers", strings.Join(got.Brokers, ","), "127.0.0.1:7001,127.0.0.1:7002"},
		{"operator id", got.Operator.ID, "ops"},
		{"relative operator svid_dir", got.Operator.SVIDDir, filepath.Join(base, "svids/operator")},
		{"participant id", got.Participant.ID, "clinic-a"},
		{"participant endpoint", got.Participant.Endpoint, "127.0.0.1:9001"},
		{"relative participant svid_dir", got.Participant.SVIDDir, filepath.Join(base, "svids/clinic-a")},
		{"absolute svid_dir kept", got.Participants["clinic-b"].SVIDDir, abs},
		{"relative svid_dir with ..", got.Participants["clinic-c"].SVIDDir, filepath.Join(dir, "svids/clinic-c")},
		{"relative ca", got.CA, filepath.Join(base, "ca")},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	// Save does not change the config it writes.
	if c.Participant.SVIDDir != "svids/clinic-a" {
		t.Errorf("Save changed the config: %q", c.Participant.SVIDDir)
	}
}

func TestLoadConfig_Errors(t *testing.T) {
	tests := []struct {
		name    string
		content string // "" with noFile: no file at all
		noFile  bool
		want    string
	}{
		{name: "missing file", noFile: true, want: "config"},
		{name: "no brokers", content: "trust_domain: qhin.test\n", want: "brokers"},
		{name: "empty broker list", content: "brokers: []\n", want: "brokers"},
		{name: "not YAML", content: "brokers: [unterminated\n", want: "config"},
		{name: "wrong shape", content: "brokers: {a: b}\n", want: "config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "qhinctl.yaml")
			if !tt.noFile {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig succeeded: %+v", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
		})
	}
}

// writeSVIDDir mints an SVID for role/name and writes it to a new directory.
func writeSVIDDir(t *testing.T, ca *pki.CA, role pki.Role, name string) string {
	t.Helper()
	svid, err := ca.IssueIdentity(role, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := pki.WriteSVID(dir, svid, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestConfig_Sources(t *testing.T) {
	ca, err := pki.NewCA(spiffeid.RequireTrustDomainFromString("qhin.test"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{
		Brokers:     []string{"127.0.0.1:1"},
		Operator:    &Identity{SVIDDir: writeSVIDDir(t, ca, pki.RoleOperator, "ops")},
		Participant: &Identity{ID: "clinic-a", SVIDDir: writeSVIDDir(t, ca, pki.RoleParticipant, "clinic-a")},
		Participants: map[string]*Identity{
			"clinic-b": {SVIDDir: writeSVIDDir(t, ca, pki.RoleParticipant, "clinic-b")},
			"clinic-c": {SVIDDir: writeSVIDDir(t, ca, pki.RoleParticipant, "clinic-c")},
			"no-dir":   {},
		},
	}
	tests := []struct {
		as      string
		wantID  string // SPIFFE ID path of the loaded SVID
		wantErr []string
	}{
		{as: "", wantID: "/participant/clinic-a"},
		{as: "clinic-a", wantID: "/participant/clinic-a"},
		{as: "clinic-b", wantID: "/participant/clinic-b"},
		{as: "clinic-c", wantID: "/participant/clinic-c"},
		{as: "clinic-z", wantErr: []string{"clinic-z", "clinic-b", "clinic-c"}},
		{as: "no-dir", wantErr: []string{"no-dir"}},
	}
	for _, tt := range tests {
		t.Run("as "+tt.as, func(t *testing.T) {
			src, err := c.ParticipantSource(tt.as)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParticipantSource(%q) succeeded", tt.as)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParticipantSource(%q): %v", tt.as, err)
			}
			if got := src.ID().Path(); got != tt.wantID {
				t.Errorf("ParticipantSource(%q) loaded %s, want %s", tt.as, got, tt.wantID)
			}
		})
	}

	op, err := c.OperatorSource()
	if err != nil {
		t.Fatalf("OperatorSource: %v", err)
	}
	if op.ID().Path() != "/operator/ops" {
		t.Errorf("OperatorSource loaded %s", op.ID())
	}

	empty := &Config{Brokers: []string{"127.0.0.1:1"}}
	if _, err := empty.ParticipantSource(""); err == nil || !strings.Contains(err.Error(), "participant.svid_dir") {
		t.Errorf("ParticipantSource without a participant = %v, want an error naming participant.svid_dir", err)
	}
	if _, err := empty.OperatorSource(); err == nil || !strings.Contains(err.Error(), "operator.svid_dir") {
		t.Errorf("OperatorSource without an operator = %v, want an error naming operator.svid_dir", err)
	}
}
