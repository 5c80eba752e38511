package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

// TestCommands_PrintTheirVersion runs --version on each built command: it
// names the command and the module it was built from, and exits 0.
func TestCommands_PrintTheirVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the commands")
	}
	bin := buildCommands(t)
	for _, name := range []string{"qhinctl", "qhin-broker", "qhin-participant"} {
		out, err := exec.Command(filepath.Join(bin, name), "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", name, err, out)
		}
		got := string(out)
		if !strings.HasPrefix(got, name+" ") || !strings.Contains(got, "module:   github.com/openqhin/openqhin\n") || !strings.Contains(got, "go:       go") {
			t.Errorf("%s --version printed:\n%s", name, got)
		}
	}
}
