//go:build unix

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readmeBlocks returns the ```sh blocks of a README section.
func readmeBlocks(t *testing.T, section string) []string {
	t.Helper()
	text := readmeSection(t, section)
	var blocks []string
	for {
		start := strings.Index(text, "```sh\n")
		if start < 0 {
			return blocks
		}
		text = text[start+len("```sh\n"):]
		end := strings.Index(text, "\n```")
		if end < 0 {
			t.Fatalf("README section %q: unterminated block", section)
		}
		blocks = append(blocks, text[:end+1])
		text = text[end+4:]
	}
}

// runReadmeFHIR runs the README's "FHIR R4 for the EHR" blocks, as pasted
// against make run, on the qhinctl dev network in dir (its paths and ports
// put in place of the defaults), and checks what each step answers.
func runReadmeFHIR(t *testing.T, bin, dir string, base int) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Log("curl is not installed: the README's FHIR walkthrough is not run")
		return
	}
	script := "set -eu\n" + strings.Join(readmeBlocks(t, "FHIR R4 for the EHR"), "\n")
	script = strings.ReplaceAll(script, "/tmp/openqhin-dev", dir)
	for j := 1; j <= 3; j++ {
		script = strings.ReplaceAll(script, "127.0.0.1:"+strconv.Itoa(7400+50+j), "127.0.0.1:"+strconv.Itoa(base+50+j))
	}
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+bin+string(filepath.ListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("phase %q: %v\n%s", "README FHIR walkthrough", err, out)
	}
	for _, want := range []string{
		`"resourceType":"CapabilityStatement"`,
		`"system":"spiffe://qhin.test/participant/p2"`,
		`"url":"http://hl7.org/fhir/StructureDefinition/match-grade","valueCode":"certain"`,
		`"resourceType":"DocumentReference"`,
		`"relation":"next"`,
		`"resourceType":"Binary"`,
		`X-Purpose-Of-Use: required`,
		`search parameter _elements: not supported by this server`,
		`patient: unknown or expired id`,
		`"family":"Quackenbush"`,
		`p2: imported 1 file(s) through its FHIR API`,
		`"family":"Okonkwo"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("phase %q: the output lacks %s:\n%s", "README FHIR walkthrough", want, out)
		}
	}
}
