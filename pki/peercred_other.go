//go:build !linux

package pki

import (
	"net"
	"os"
)

// peerCredsSupported reports whether the issuer learns its callers' uids
// from the kernel. Elsewhere than Linux it does not: the socket's directory
// (mode 0700) is then the only guard, and every caller counts as the
// issuer's own uid.
const peerCredsSupported = false

func peerCred(net.Conn) (uid uint32, pid int32, err error) {
	return uint32(os.Getuid()), 0, nil
}
