package repo

import (
	"context"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// A Postgres link that drops packets without a reset (a partition, a
// firewall or NAT that forgets the connection, a cable pulled) gives no
// error: a statement written on it waits until TCP's retransmissions give
// up, about 15 minutes on Linux, and so does the send that holds it (and,
// behind that send, every send of its sequencer shard). These bounds turn
// such a link into an error, which the callers answer as unavailable:
//
//   - pgUserTimeout: data written and not acknowledged for this long fails
//     the connection (TCP_USER_TIMEOUT, where the platform has it). A slow
//     query is not affected: Postgres's kernel acknowledges the bytes at
//     once, whatever the query then takes.
//   - pgKeepAlive: an idle pooled connection is probed this often, so a
//     dead one is found before a statement is written on it.
//   - pgConnectTimeout: a dial that gets no answer at all (SYN dropped)
//     fails after this, unless the URL sets connect_timeout.
const (
	pgUserTimeout    = 5 * time.Second
	pgKeepAlive      = 5 * time.Second
	pgConnectTimeout = 5 * time.Second
)

// boundLink applies the bounds above to cfg.
func boundLink(cfg *pgx.ConnConfig) {
	d := &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: pgKeepAlive, Interval: pgKeepAlive, Count: 2},
		Control:         setUserTimeout(pgUserTimeout),
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
}
