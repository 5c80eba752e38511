package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version describes the running binary from its build information: the
// module version, and the version-control revision, commit time and
// modified flag when the build recorded them (go build in a checkout does,
// go test and builds with -buildvcs=false do not).
func Version(command string) string {
	bi, _ := debug.ReadBuildInfo() // nil when the binary has none
	return FormatVersion(command, bi)
}

// FormatVersion renders bi as Version does; a nil bi (a binary built without
// module support) says so.
func FormatVersion(command string, bi *debug.BuildInfo) string {
	var b strings.Builder
	if bi == nil {
		fmt.Fprintf(&b, "%s (no build information)\n", command)
		fmt.Fprintf(&b, "  go:       %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return b.String()
	}
	version := bi.Main.Version
	if version == "" {
		version = "(unknown)"
	}
	fmt.Fprintf(&b, "%s %s\n", command, version)
	if bi.Main.Path != "" {
		fmt.Fprintf(&b, "  module:   %s\n", bi.Main.Path)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for _, s := range []struct{ key, label string }{
		{"vcs.revision", "revision"},
		{"vcs.time", "time"},
		{"vcs.modified", "modified"},
	} {
		if v, ok := settings[s.key]; ok {
			fmt.Fprintf(&b, "  %-9s %s\n", s.label+":", v)
		}
	}
	goos, goarch := settings["GOOS"], settings["GOARCH"]
	if goos == "" {
		goos, goarch = runtime.GOOS, runtime.GOARCH
	}
	fmt.Fprintf(&b, "  go:       %s %s/%s\n", bi.GoVersion, goos, goarch)
	return b.String()
}
