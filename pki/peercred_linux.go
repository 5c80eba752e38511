package pki

import (
	"fmt"
	"net"
	"syscall"
)

// peerCredsSupported reports whether the issuer learns its callers' uids
// from the kernel.
const peerCredsSupported = true

// peerCred returns the uid and pid of the process at the other end of a Unix
// socket, as the kernel recorded them when it connected (SO_PEERCRED).
func peerCred(c net.Conn) (uid uint32, pid int32, err error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, 0, fmt.Errorf("peer credentials: %T is not a Unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", serr)
	}
	return cred.Uid, cred.Pid, nil
}
