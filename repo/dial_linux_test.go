package repo

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"
)

// TestBoundLinkSetsUserTimeout dials through the dialer boundLink installs
// and reads the socket's options back.
func TestBoundLinkSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg, err := pgx.ParseConfig("postgres://u@" + ln.Addr().String() + "/db")
	if err != nil {
		t.Fatal(err)
	}
	boundLink(cfg)
	c, err := cfg.DialFunc(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var userTimeout, keepIdle int
	var gerr error
	_ = raw.Control(func(fd uintptr) {
		userTimeout, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		if gerr == nil {
			keepIdle, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		}
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	if want := int(pgUserTimeout.Milliseconds()); userTimeout != want {
		t.Errorf("TCP_USER_TIMEOUT %d ms, want %d", userTimeout, want)
	}
	if want := int(pgKeepAlive.Seconds()); keepIdle != want {
		t.Errorf("TCP_KEEPIDLE %d s, want %d", keepIdle, want)
	}
	if cfg.ConnectTimeout != pgConnectTimeout {
		t.Errorf("connect timeout %s, want %s", cfg.ConnectTimeout, pgConnectTimeout)
	}
}
