// Package broker is what WinDI replicas share: pub/sub delivery between
// replicas, short-lived dedup keys, presence and rate-limit counters.
//
// Three implementations satisfy Broker and pass one conformance suite:
// Memory, for the embedded single-process mode; Redis from NewRedis, for
// any number of replicas sharing one Redis server; and Redis from
// NewRedisCluster, for replicas sharing a Redis Cluster, where chat events
// go through sharded pub/sub (SPUBLISH / SSUBSCRIBE) to the one shard that
// owns the channel.
//
// Guarantees, for all three:
//
//   - Delivery is at most once and, per publisher, in publish order per
//     channel. A message reaches a replica only if the replica's
//     subscription to the channel was confirmed when the message was
//     published. The Redis brokers may lose messages while a connection is
//     down, silent (see Options.SilenceTimeout) or moving to another shard;
//     they report the affected channels through Handler.Resubscribed once
//     the subscription is back, so the receiver refills from the database.
//     Nothing in this package is durable: the database is the source of
//     truth.
//   - Claim, ClaimMany, PresenceJoin, PresenceLeave and Hit are atomic per
//     key across every replica that shares the broker.
//   - Presence entries live for Options.PresenceTTL unless refreshed, so a
//     replica that dies stops counting within that TTL.
//   - Channel and key names are the callers' logical names ("chat:12",
//     "user:7", "session:abc", "dedup:12:7:abc"); each implementation maps
//     them to its own storage names (see Redis for the mapping).
package broker

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Handler receives what the broker delivers. Calls for one channel arrive
// in publish order from one goroutine; they must not block for long,
// because they hold up every other channel of the same broker.
type Handler interface {
	// Receive is called once for each message published to a subscribed
	// channel. The payload is the receiver's to keep.
	Receive(channel string, payload []byte)
	// Resubscribed reports channels whose subscription was re-established
	// after the broker's connection was lost or found silent, or after the
	// channel moved to another shard (a cluster failover or slot
	// migration); messages published meanwhile may be lost, so the
	// receiver refills from the database.
	Resubscribed(channels []string)
}

// Broker is shared by every replica of a deployment.
type Broker interface {
	// Start sets the handler; call once before Subscribe.
	Start(h Handler)
	// Publish delivers payload to every replica subscribed to channel at
	// that moment, at most once, in publish order per publisher. It never
	// calls a handler synchronously, so callers may hold locks. Any channel
	// name works, point to point included ("session:<id>", "user:<id>"):
	// whoever subscribed to that name receives it.
	Publish(ctx context.Context, channel string, payload []byte) error
	// PublishMany publishes every publication, in one round trip where the
	// implementation can (Redis: one pipeline; cluster: one pipeline per
	// shard, the shards in parallel). Publications to one channel are
	// delivered in slice order, and after anything this publisher published
	// to that channel before; the same guarantees as Publish otherwise.
	// An empty slice is a no-op.
	//
	// On error some publications may have been delivered and others not,
	// in no particular pattern across channels (within one channel, those
	// delivered are still in order). The caller treats every replica as
	// possibly having missed all of them; receivers refill from the
	// database.
	PublishMany(ctx context.Context, pubs []Publication) error
	// Subscribe returns once the subscription is confirmed: everything
	// published after it returns reaches the handler (barring a connection
	// loss, reported through Resubscribed). Subscribing twice is a no-op.
	// On error the broker is not subscribed, unless a concurrent Subscribe
	// for the same channel succeeds.
	Subscribe(ctx context.Context, channel string) error
	// Unsubscribe stops delivery for channel; unsubscribing a channel that
	// is not subscribed is a no-op.
	Unsubscribe(ctx context.Context, channel string) error
	// Claim sets key when absent, with ttl (SET NX PX); true when this call
	// set it. It is the fast cross-replica dedup guard; the database keeps
	// the durable one, since keys expire and Redis may restart.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// ClaimMany claims every key as Claim does, in one round trip where
	// the implementation can (Redis: one pipeline; cluster: one pipeline
	// per shard). out[i] is true when this call set keys[i]; a key that
	// appears twice is claimed by its first occurrence. Each key is atomic
	// on its own (of concurrent claims of one key exactly one wins), not
	// the set as a whole.
	//
	// On error out still has len(keys) entries: true where this call is
	// known to have set the key, false elsewhere, and a key whose command
	// failed may or may not be set. The caller falls back to the durable
	// guard (the database) for the keys it could not claim.
	ClaimMany(ctx context.Context, keys []string, ttl time.Duration) ([]bool, error)
	// PresenceJoin records that replica holds at least one connection of
	// user; first reports that no replica held one before (atomically
	// across replicas: of concurrent joins exactly one sees first=true when
	// the user was offline).
	PresenceJoin(ctx context.Context, replica string, userID int64) (first bool, err error)
	// PresenceLeave removes replica's entry; last reports that this call
	// took the user offline: no live replica holds the user any more and
	// the user was online before (atomically, exactly one of concurrent
	// leaves sees last=true).
	PresenceLeave(ctx context.Context, replica string, userID int64) (last bool, err error)
	// PresenceRefresh extends replica's entries for userIDs (heartbeat),
	// re-creating an entry that has already expired. Entries not refreshed
	// within the presence TTL stop counting, so a dead replica's users go
	// offline within the TTL. A refresh that races with PresenceLeave for
	// the same user and replica may re-create the entry for up to one TTL.
	PresenceRefresh(ctx context.Context, replica string, userIDs []int64) error
	// Online returns which of userIDs have a live entry on any replica, in
	// no particular order.
	Online(ctx context.Context, userIDs []int64) ([]int64, error)
	// Hit counts one event for key in a fixed window and returns the count
	// in the current window (rate limits shared across replicas). Windows
	// are aligned to the Unix epoch.
	Hit(ctx context.Context, key string, window time.Duration) (int64, error)
	// Hits returns the count Hit has reached for key in the current window,
	// without counting.
	Hits(ctx context.Context, key string, window time.Duration) (int64, error)
	// Ping reports whether the broker is reachable.
	Ping(ctx context.Context) error
	// Close stops delivery and releases the broker's resources; later calls
	// fail with ErrClosed. Closing twice is a no-op.
	Close() error
}

// Publication is one message of PublishMany.
type Publication struct {
	Channel string
	Payload []byte
}

// Options configures the implementations.
type Options struct {
	// PresenceTTL is how long a presence entry counts without a refresh;
	// default 45s.
	PresenceTTL time.Duration
	// Prefix is prepended to every key and channel; default "windi:".
	// Tests use a random one.
	Prefix string
	// Now is the clock of the memory broker, for tests; default time.Now.
	// The Redis broker uses the Redis server's clock for presence and the
	// local clock for rate-limit windows.
	Now func() time.Time
	// SilenceTimeout bounds how long a Redis subscription connection may
	// receive nothing before the broker drops it as dead; default 3s. The
	// broker pings on every subscription connection every SilenceTimeout/3,
	// and Redis answers on the same connection, so a live connection is
	// never silent that long. A half-open connection (packets dropped, no
	// RST, so no error either) is noticed within SilenceTimeout; the broker
	// then subscribes again on a new connection and reports the channels
	// through Handler.Resubscribed, within SilenceTimeout plus the time a
	// new connection takes. The memory broker ignores it.
	SilenceTimeout time.Duration
	// Logger is where the Redis brokers report a lost subscription
	// connection (event broker.conn_lost, with why and how many channels
	// it carried); default: nowhere.
	Logger *slog.Logger
}

// ErrClosed is returned by calls on a closed broker.
var ErrClosed = errors.New("broker: closed")

// errNotStarted is returned by Subscribe before Start.
var errNotStarted = errors.New("broker: subscribe before start")

// errBadWindow is returned by Hit for a window under a millisecond.
var errBadWindow = errors.New("broker: rate-limit window under 1ms")

func (o Options) withDefaults() Options {
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = 45 * time.Second
	}
	if o.Prefix == "" {
		o.Prefix = "windi:"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SilenceTimeout <= 0 {
		o.SilenceTimeout = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// windowIndex numbers the fixed window of length window that holds t.
func windowIndex(t time.Time, window time.Duration) int64 {
	return t.UnixMilli() / window.Milliseconds()
}
