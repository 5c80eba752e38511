package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"go.yaml.in/yaml/v3"

	"github.com/openqhin/openqhin/pki"
)

// Config is what qhinctl needs to reach a network: the brokers, and the
// identities it may act as. qhinctl dev writes one; operators write their
// own.
type Config struct {
	TrustDomain string   `yaml:"trust_domain"`
	Brokers     []string `yaml:"brokers"`
	// Operator is the identity for directory and cluster commands.
	Operator *Identity `yaml:"operator,omitempty"`
	// Participant is the default identity for queries.
	Participant *Identity `yaml:"participant,omitempty"`
	// Participants are other identities queries may be made as (--as).
	Participants map[string]*Identity `yaml:"participants,omitempty"`
	// CA is the network CA directory, for pki commands of a development
	// network.
	CA string `yaml:"ca,omitempty"`
	// LinkageKeyFile is the network's linkage key (members hold it, never
	// brokers): qhinctl adds record-locator tokens to discovery queries
	// with it.
	LinkageKeyFile string `yaml:"linkage_key_file,omitempty"`
}

// Identity names an SVID directory (svid.pem, svid.key, bundle.pem).
type Identity struct {
	ID      string `yaml:"id,omitempty"`
	SVIDDir string `yaml:"svid_dir"`
	// Endpoint is a participant's Responder address, for reference.
	Endpoint string `yaml:"endpoint,omitempty"`
	// FHIR is the base URL of a participant's FHIR API (https://… or
	// unix:///…), where qhinctl import sends records while it runs.
	FHIR string `yaml:"fhir,omitempty"`
	// DataDir is a participant's data directory, where qhinctl import
	// writes records while it is stopped.
	DataDir string `yaml:"data_dir,omitempty"`
}

// LoadConfig reads a YAML config file. Relative SVID directories are taken
// relative to the file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(c.Brokers) == 0 {
		return nil, fmt.Errorf("config %s: brokers: at least one broker address is required", path)
	}
	base := filepath.Dir(path)
	for _, id := range c.identities() {
		if id.SVIDDir != "" && !filepath.IsAbs(id.SVIDDir) {
			id.SVIDDir = filepath.Join(base, id.SVIDDir)
		}
		if id.DataDir != "" && !filepath.IsAbs(id.DataDir) {
			id.DataDir = filepath.Join(base, id.DataDir)
		}
	}
	if c.CA != "" && !filepath.IsAbs(c.CA) {
		c.CA = filepath.Join(base, c.CA)
	}
	if c.LinkageKeyFile != "" && !filepath.IsAbs(c.LinkageKeyFile) {
		c.LinkageKeyFile = filepath.Join(base, c.LinkageKeyFile)
	}
	return &c, nil
}

func (c *Config) identities() []*Identity {
	out := []*Identity{c.Operator, c.Participant}
	for _, id := range c.Participants {
		out = append(out, id)
	}
	var nonNil []*Identity
	for _, id := range out {
		if id != nil {
			nonNil = append(nonNil, id)
		}
	}
	return nonNil
}

// Save writes the config as YAML (mode 0600).
func (c *Config) Save(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte("# OpenQHIN client configuration (qhinctl --config)\n"), b...), 0o600)
}

// ParticipantIdentity returns the identity of participant id, or the
// default participant when id is empty; nil when the config has none.
func (c *Config) ParticipantIdentity(id string) *Identity {
	if id == "" && c.Participant != nil {
		id = c.Participant.ID
	}
	if p, ok := c.Participants[id]; ok {
		return p
	}
	if c.Participant != nil && (id == "" || c.Participant.ID == id) {
		return c.Participant
	}
	return nil
}

// OperatorSource loads the operator SVID.
func (c *Config) OperatorSource() (*pki.DirSource, error) {
	if c.Operator == nil || c.Operator.SVIDDir == "" {
		return nil, errors.New("config has no operator identity (operator.svid_dir)")
	}
	return pki.LoadDir(c.Operator.SVIDDir)
}

// ParticipantSource loads the SVID of participant id, or of the default
// participant when id is empty.
func (c *Config) ParticipantSource(id string) (*pki.DirSource, error) {
	if id == "" || (c.Participant != nil && c.Participant.ID == id) {
		if c.Participant == nil || c.Participant.SVIDDir == "" {
			return nil, errors.New("config has no participant identity (participant.svid_dir); pass --as")
		}
		return pki.LoadDir(c.Participant.SVIDDir)
	}
	p, ok := c.Participants[id]
	if !ok || p.SVIDDir == "" {
		known := make([]string, 0, len(c.Participants)+1)
		if c.Participant != nil && c.Participant.ID != "" {
			known = append(known, c.Participant.ID)
		}
		for k := range c.Participants {
			if !slices.Contains(known, k) {
				known = append(known, k)
			}
		}
		sort.Strings(known)
		return nil, fmt.Errorf("config has no identity for participant %s (known: %v)", id, known)
	}
	return pki.LoadDir(p.SVIDDir)
}
