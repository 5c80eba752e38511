package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// buildCommands builds qhinctl, qhin-broker and qhin-participant into one
// directory, as make build installs them, and returns it.
func buildCommands(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/qhinctl", "./cmd/qhin-broker", "./cmd/qhin-participant")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("phase %q: %v\n%s", "build the commands", err, out)
	}
	return bin
}

// shellWords splits a command line the way a POSIX shell would, for the
// quoting qhinctl prints: single quotes and backslashes.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted:
			if c == '\'' {
				quoted = false
			} else {
				cur.WriteByte(c)
			}
		case c == '\'':
			quoted, inWord = true, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// readmeSection returns the text of the README's section (a "## "
// heading), up to the next one.
func readmeSection(t *testing.T, section string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n## "+section+"\n")
	if i < 0 {
		t.Fatalf("README has no section %q", section)
	}
	text = text[i+1:]
	if j := strings.Index(text[3:], "\n## "); j >= 0 {
		text = text[:j+3]
	}
	return text
}

// readmeCommand returns the words of the first command in the README's
// section that starts with prefix, as a shell would split them.
func readmeCommand(t *testing.T, section, prefix string) []string {
	t.Helper()
	for _, line := range strings.Split(readmeSection(t, section), "\n") {
		if strings.HasPrefix(line, prefix) {
			words, err := shellWords(line)
			if err != nil {
				t.Fatalf("README line %q: %v", line, err)
			}
			return words
		}
	}
	t.Fatalf("README section %q has no command starting with %q", section, prefix)
	return nil
}

// flagValue returns the value of --name in words.
func flagValue(words []string, name string) string {
	for i, w := range words {
		if w == "--"+name && i+1 < len(words) {
			return words[i+1]
		}
		if v, ok := strings.CutPrefix(w, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// linksAt reports whether p has links at exactly the members given.
func linksAt(p *qhinv1.Person, members ...string) bool {
	have := map[string]bool{}
	for _, l := range p.Links {
		have[l.ParticipantId] = true
	}
	for _, m := range members {
		if !have[m] {
			return false
		}
	}
	return len(have) == len(members)
}
