package e2e

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// childAttr puts a node in its own process group, so that a Ctrl-C in the
// terminal reaches only the parent, which stops the nodes in order; and has
// the kernel send the node SIGTERM when its parent dies, so that no node is
// left running without it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// processRuns reports whether pid is a live process whose command line
// mentions marker (so that a reused pid is not mistaken for a node).
func processRuns(pid int, marker string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte(marker))
}
