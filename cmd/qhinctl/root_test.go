package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/openqhin/openqhin/cmd/internal/cli"
)

// runQhinctl runs the command line in this process and returns its output.
func runQhinctl(t *testing.T, args ...string) string {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("qhinctl %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestRoot_VersionFlagPrintsBuildInformation(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		if got, want := runQhinctl(t, flag), cli.Version("qhinctl"); got != want {
			t.Errorf("qhinctl %s = %q, want %q", flag, got, want)
		}
	}
}
