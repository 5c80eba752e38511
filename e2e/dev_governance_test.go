//go:build unix

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeStep is one command of a README block, with what the README
// says it answers when it is refused.
type readmeStep struct {
	line    string // the command, continuation lines joined
	refusal string // "# qhinctl: …" under it: the refusal it must print
}

// readmeSteps splits blocks into commands. A command ends where a line
// does not end in a backslash; a comment line "# qhinctl: WHAT" right under
// a command is the refusal the command must print (its first words, up to
// the first "…", are matched).
func readmeSteps(blocks []string) []readmeStep {
	var out []readmeStep
	for _, b := range blocks {
		var cur strings.Builder
		for _, line := range strings.Split(b, "\n") {
			trimmed := strings.TrimSpace(line)
			if cur.Len() == 0 && strings.HasPrefix(trimmed, "# qhinctl:") && len(out) > 0 {
				want := strings.TrimSpace(strings.TrimPrefix(trimmed, "#"))
				if i := strings.Index(want, "…"); i >= 0 {
					want = want[:i]
				}
				out[len(out)-1].refusal = strings.TrimSpace(want)
				continue
			}
			if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
				continue
			}
			if strings.HasSuffix(line, "\\") {
				cur.WriteString(strings.TrimSuffix(line, "\\"))
				continue
			}
			cur.WriteString(line)
			out = append(out, readmeStep{line: cur.String()})
			cur.Reset()
		}
	}
	return out
}

// runReadmeGovernance runs every command of the README's "Governance"
// section, in order, as pasted against make run, on the qhinctl dev network
// in dir: each must succeed, or print the refusal the README shows under
// it.
func runReadmeGovernance(t *testing.T, bin, dir string) {
	t.Helper()
	cmds := readmeSteps(readmeBlocks(t, "Governance"))
	if len(cmds) < 10 {
		t.Fatalf("phase %q: the README's Governance section has only %d commands", "README Governance", len(cmds))
	}
	for _, c := range cmds {
		line := strings.ReplaceAll(c.line, "/tmp/openqhin-dev", dir)
		cmd := exec.Command("bash", "-c", line)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+bin+string(filepath.ListSeparator)+os.Getenv("PATH"),
			"QHIN_CONFIG="+filepath.Join(dir, "qhinctl.yaml"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
		out, err := cmd.CombinedOutput()
		switch {
		case c.refusal == "" && err != nil:
			t.Fatalf("phase %q: %s: %v\n%s", "README Governance", line, err, out)
		case c.refusal != "" && (err == nil || !strings.Contains(string(out), c.refusal)):
			t.Fatalf("phase %q: %s: want the refusal %q, got %v\n%s", "README Governance", line, c.refusal, err, out)
		}
	}
	t.Logf("the README's Governance section: %d commands ran as it says", len(cmds))
}

func TestReadmeSteps_Split(t *testing.T) {
	got := readmeSteps([]string{"qhinctl a \\\n  --b c   # note\nqhinctl d\n# qhinctl: PermissionDenied: x: y … z\n\n# a comment\nqhinctl e\n"})
	want := []readmeStep{{line: "qhinctl a   --b c   # note"}, {line: "qhinctl d", refusal: "qhinctl: PermissionDenied: x: y"}, {line: "qhinctl e"}}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("command %d: got %q, want %q", i, got[i], want[i])
		}
	}
}
