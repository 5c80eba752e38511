package pki

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name  string
		input string
		ok    bool
	}{
		{"single letter", "a", true},
		{"single digit", "0", true},
		{"dash", "node-1", true},
		{"dot and underscore", "hospital.a_b", true},
		{"63 characters", strings.Repeat("a", 63), true},
		{"64 characters", strings.Repeat("a", 64), false},
		{"empty", "", false},
		{"uppercase", "Node-1", false},
		{"uppercase inside", "nodeA", false},
		{"leading dash", "-node", false},
		{"leading dot", ".node", false},
		{"dot dot", "..", false},
		{"leading underscore", "_node", false},
		{"space", "node 1", false},
		{"slash", "a/b", false},
		{"percent", "a%2fb", false},
		{"trailing newline", "node\n", false},
		{"non-ascii", "nöde", false},
		{"colon", "a:b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.input)
			if tt.ok && err != nil {
				t.Fatalf("ValidateName(%q) = %v, want ok", tt.input, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("ValidateName(%q) = nil, want an error", tt.input)
			}
		})
	}
}

func TestParseIdentityString(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		wantRole Role
		wantName string
		wantErr  string // substring of the error; empty means success
	}{
		{"broker", "spiffe://qhin.test/broker/node-1", RoleBroker, "node-1", ""},
		{"participant", "spiffe://qhin.test/participant/hospital-a", RoleParticipant, "hospital-a", ""},
		{"operator", "spiffe://qhin.test/operator/alice", RoleOperator, "alice", ""},
		{"other trust domain", "spiffe://other.test/broker/b1", RoleBroker, "b1", ""},
		{"longest name", "spiffe://qhin.test/broker/" + strings.Repeat("n", 63), RoleBroker, strings.Repeat("n", 63), ""},

		{"unknown role", "spiffe://qhin.test/admin/alice", "", "", `unknown role "admin"`},
		{"uppercase role", "spiffe://qhin.test/Broker/node-1", "", "", `unknown role "Broker"`},
		{"role only", "spiffe://qhin.test/broker", "", "", "path must be /<role>/<name>"},
		{"trust domain only", "spiffe://qhin.test", "", "", "path must be /<role>/<name>"},
		{"extra segment", "spiffe://qhin.test/broker/node-1/extra", "", "", "path must be /<role>/<name>"},
		{"uppercase name", "spiffe://qhin.test/participant/Hospital", "", "", "name"},
		{"name starts with dash", "spiffe://qhin.test/participant/-h", "", "", "name"},
		{"name too long", "spiffe://qhin.test/broker/" + strings.Repeat("n", 64), "", "", "name"},
		{"trailing slash", "spiffe://qhin.test/broker/node-1/", "", "", ""},
		{"empty segment", "spiffe://qhin.test//broker/node-1", "", "", ""},
		{"uppercase trust domain", "spiffe://QHIN.test/broker/node-1", "", "", ""},
		{"wrong scheme", "https://qhin.test/broker/node-1", "", "", ""},
		{"empty", "", "", "", ""},
		{"percent encoded", "spiffe://qhin.test/broker/node%2d1", "", "", ""},
		{"query", "spiffe://qhin.test/broker/node-1?x=1", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIdentityString(tt.input)
			if tt.wantRole == "" {
				if err == nil {
					t.Fatalf("ParseIdentityString(%q) = %v, want an error", tt.input, got)
				}
				if !errors.Is(err, ErrBadIdentity) {
					t.Errorf("error %v does not wrap ErrBadIdentity", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseIdentityString(%q): %v", tt.input, err)
			}
			if got.Role != tt.wantRole || got.Name != tt.wantName {
				t.Errorf("got role %q name %q, want %q %q", got.Role, got.Name, tt.wantRole, tt.wantName)
			}
			if got.String() != tt.input || got.ID.String() != tt.input {
				t.Errorf("String() = %q, want %q", got.String(), tt.input)
			}
		})
	}
}

func TestParseIdentity_ZeroIDIsAnError(t *testing.T) {
	if _, err := ParseIdentity(spiffeid.ID{}); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("ParseIdentity(zero) = %v, want ErrBadIdentity", err)
	}
}

func TestNewIdentity(t *testing.T) {
	tests := []struct {
		name    string
		role    Role
		node    string
		wantID  string
		wantErr bool
	}{
		{"broker", RoleBroker, "node-1", "spiffe://qhin.test/broker/node-1", false},
		{"participant", RoleParticipant, "hospital-a", "spiffe://qhin.test/participant/hospital-a", false},
		{"operator", RoleOperator, "alice", "spiffe://qhin.test/operator/alice", false},
		{"unknown role", Role("admin"), "alice", "", true},
		{"empty role", Role(""), "alice", "", true},
		{"role with a slash", Role("broker/x"), "alice", "", true},
		{"uppercase role", Role("Broker"), "alice", "", true},
		{"empty name", RoleBroker, "", "", true},
		{"uppercase name", RoleBroker, "Node", "", true},
		{"name with a slash", RoleBroker, "a/b", "", true},
		{"name too long", RoleBroker, strings.Repeat("n", 64), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewIdentity(testTD, tt.role, tt.node)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NewIdentity(%q, %q) = %v, want an error", tt.role, tt.node, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewIdentity(%q, %q): %v", tt.role, tt.node, err)
			}
			if got.ID.String() != tt.wantID || got.Role != tt.role || got.Name != tt.node {
				t.Errorf("got %+v, want id %s", got, tt.wantID)
			}
			parsed, err := ParseIdentity(got.ID)
			if err != nil {
				t.Fatalf("ParseIdentity(NewIdentity(...)): %v", err)
			}
			if parsed != got {
				t.Errorf("ParseIdentity round trip = %+v, want %+v", parsed, got)
			}
		})
	}
}

func TestMustIdentity_PanicsOnBadName(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("MustIdentity with a bad name did not panic")
		}
	}()
	MustIdentity(testTD, RoleBroker, "Bad Name")
}

func TestRoles_AreTheRolesParseIdentityAccepts(t *testing.T) {
	for _, role := range Roles {
		id := "spiffe://qhin.test/" + string(role) + "/n"
		if _, err := ParseIdentityString(id); err != nil {
			t.Errorf("role %s: %v", role, err)
		}
	}
}

func FuzzParseIdentityString(f *testing.F) {
	for _, seed := range []string{
		"spiffe://qhin.test/broker/node-1",
		"spiffe://qhin.test/participant/hospital-a",
		"spiffe://qhin.test/operator/alice",
		"spiffe://example.org/operator/a.b_c-d",
		"spiffe://qhin.test/broker/node-1/extra",
		"spiffe://qhin.test/admin/x",
		"spiffe://qhin.test/broker/",
		"spiffe://qhin.test//broker/x",
		"spiffe://QHIN.test/broker/x",
		"spiffe://qhin.test/broker/" + strings.Repeat("n", 64),
		"spiffe://qhin.test/broker/%2e",
		"spiffe://",
		"",
		"\x00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ident, err := ParseIdentityString(s)
		if err != nil {
			if !errors.Is(err, ErrBadIdentity) {
				t.Fatalf("ParseIdentityString(%q) error %v does not wrap ErrBadIdentity", s, err)
			}
			return
		}
		if ident.String() != s {
			t.Fatalf("ParseIdentityString(%q).String() = %q", s, ident.String())
		}
		if err := ValidateName(ident.Name); err != nil {
			t.Fatalf("ParseIdentityString(%q) accepted name: %v", s, err)
		}
		again, err := NewIdentity(ident.ID.TrustDomain(), ident.Role, ident.Name)
		if err != nil {
			t.Fatalf("NewIdentity(%s, %s, %s) of a parsed identity: %v", ident.ID.TrustDomain(), ident.Role, ident.Name, err)
		}
		if again != ident {
			t.Fatalf("round trip of %q: NewIdentity = %+v, ParseIdentityString = %+v", s, again, ident)
		}
	})
}
