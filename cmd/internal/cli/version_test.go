package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "arm64"},
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "263e6f1c0ffee"},
		{Key: "vcs.time", Value: "2026-11-25T21:53:44Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, tt := range []struct {
		name    string
		bi      *debug.BuildInfo
		want    []string
		notWant []string
	}{
		{
			name: "checkout build",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Settings: vcs,
				Main: debug.Module{Path: "github.com/openqhin/openqhin", Version: "v0.0.0-20261125215344-263e6f1c0ffe+dirty"}},
			want: []string{"qhinctl v0.0.0-20261125215344-263e6f1c0ffe+dirty\n", "module:   github.com/openqhin/openqhin\n",
				"revision: 263e6f1c0ffee\n", "time:     2026-11-25T21:53:44Z\n", "modified: true\n", "go:       go1.26.8 linux/arm64\n"},
		},
		{
			name: "tagged module, no VCS stamp",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/openqhin/openqhin", Version: "v1.2.3"}},
			want: []string{"qhinctl v1.2.3\n", "module:   github.com/openqhin/openqhin\n"},
			// Absent settings are left out rather than shown empty.
			notWant: []string{"revision", "time:", "modified"},
		},
		{
			name: "no version recorded",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8"},
			want: []string{"qhinctl (unknown)\n"},
		},
		{
			name: "no build information",
			want: []string{"qhinctl (no build information)\n", "go:       go"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := FormatVersion("qhinctl", tt.bi)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("unexpected %q in:\n%s", w, got)
				}
			}
		})
	}
}

// TestVersion_ThisBinary reads the test binary's own build information: the
// module path is always there.
func TestVersion_ThisBinary(t *testing.T) {
	got := Version("cli.test")
	if !strings.HasPrefix(got, "cli.test ") || !strings.Contains(got, "go:       go") {
		t.Errorf("Version = %q", got)
	}
}
