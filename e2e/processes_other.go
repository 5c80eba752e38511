//go:build !linux

package e2e

import (
	"os"
	"syscall"
)

// childAttr puts a node in its own process group where the system has
// them. Only Linux can signal a node when its parent dies; elsewhere a node
// whose parent was killed keeps running, and the next start finds it by its
// pid file.
func childAttr() *syscall.SysProcAttr { return procAttr() }

// processRuns reports whether pid is a live process. Without /proc it cannot
// tell a node from another process that reused the pid.
func processRuns(pid int, _ string) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return p.Signal(syscall.Signal(0)) == nil
}
