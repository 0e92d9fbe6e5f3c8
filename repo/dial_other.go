//go:build !linux

package repo

import (
	"syscall"
	"time"
)

// setUserTimeout returns nil where TCP_USER_TIMEOUT is not available: the
// keepalive probes of boundLink still find a dead idle connection.
func setUserTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
