package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the broker that lets replicas share delivery, dedup keys,
// presence and rate limits through Redis: one server (NewRedis) or a Redis
// Cluster (NewRedisCluster). Names are mapped as keyspace describes: on a
// single server "<prefix><name>", in a cluster with hash tags, so a chat's
// channel and dedup keys share a slot.
//
// Commands go through one go-redis client (a ClusterClient in cluster
// mode, which routes each command to the master owning its key's slot and
// follows MOVED and ASK redirects, which are safe: the command did not
// run). They are never retried after a network error or timeout: PUBLISH,
// SET NX, INCR and the presence scripts are not idempotent, and a retry
// after a lost reply would duplicate a message or misreport a claim.
// Errors go to the caller.
//
// Subscriptions are this package's own (see subscribe.go): one pub/sub
// connection per Redis node that owns a subscribed channel (the single
// server, or each cluster master), pinged so a silent connection is noticed
// within Options.SilenceTimeout, rebuilt by the broker when it fails, with
// the channels reported through Handler.Resubscribed. In cluster mode they
// use sharded pub/sub (SSUBSCRIBE, SPUBLISH), so a message travels only
// within the shard that owns its channel.
type Redis struct {
	cmd     redis.UniversalClient
	cluster *redis.ClusterClient // nil on a single server
	names   keyspace
	ttl     time.Duration
	silence time.Duration
	log     *slog.Logger // reports lost subscription connections

	// addr is the single server's address, the only route there.
	addr string
	// nodeOptions returns the options of a new subscription connection to
	// the node at addr.
	nodeOptions func(addr string) *redis.Options
	// connectTimeout bounds a subscription connection's dial and handshake.
	connectTimeout time.Duration

	// stripes serialize the (un)subscribing of one channel: the change of
	// its state and the command that goes with it, so commands for one
	// channel reach Redis in the order the state changed. A channel uses
	// stripes[stripe(name)]; whoever needs several takes them in index
	// order.
	stripes [64]sync.Mutex

	// mu guards the fields below and the fields of every redisSub and
	// subConn that say so. It is never held during network I/O.
	mu      sync.Mutex
	handler Handler
	subs    map[string]*redisSub // by logical channel name
	byName  map[string]*redisSub // the same, by Redis channel name
	conns   map[string]*subConn  // live subscription connections by node address
	slots   []slotRange          // cluster: the slot owners as last read
	// reroute asks the maintainer to read the slot owners again before it
	// routes the next orphans (a connection failed or a slot moved).
	reroute bool
	closed  bool

	events chan subEvent  // readers -> dispatcher
	wake   chan struct{}  // wakes the maintainer; capacity 1
	quit   chan struct{}  // closed by Close
	wg     sync.WaitGroup // every goroutine the broker started
}

var _ Broker = (*Redis)(nil)

// errBadPrefix is returned by NewRedisCluster for a prefix with braces.
var errBadPrefix = errors.New("broker: a cluster key prefix must not contain { or }")

// NewRedis connects to the Redis server at url (redis://… as
// redis.ParseURL reads it, query options included) and pings it. Timeouts
// not set in the URL default to 5s to dial and 3s to read or write;
// retries default to none.
func NewRedis(ctx context.Context, url string, opts Options) (*Redis, error) {
	opts = opts.withDefaults()
	ro, err := serverOptions(url)
	if err != nil {
		return nil, err
	}
	client := redis.NewClient(ro)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("broker: ping redis: %w", err)
	}
	r := newRedis(client, nil, keyspace{prefix: opts.Prefix}, opts)
	r.addr = ro.Addr
	r.connectTimeout = ro.DialTimeout + ro.ReadTimeout
	r.nodeOptions = func(string) *redis.Options {
		o, _ := serverOptions(url) // parsed once above already
		o.DialerRetries = 1        // the broker retries, and reports
		o.Dialer = dialOnce(redis.NewDialer(o))
		return o
	}
	r.start()
	return r, nil
}

// NewRedisCluster connects to the Redis Cluster that url names, in
// go-redis's cluster URL form (redis://host1:7000?addr=host2:7001&…, as
// redis.ParseClusterURL reads it; one seed address is enough, the client
// discovers the rest), and reads which master owns which slot. Defaults as
// for NewRedis. The prefix must not contain braces (it would become the
// hash tag of every key).
func NewRedisCluster(ctx context.Context, url string, opts Options) (*Redis, error) {
	opts = opts.withDefaults()
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, errBadPrefix
	}
	co, err := clusterOptions(url)
	if err != nil {
		return nil, err
	}
	client := redis.NewClusterClient(co)
	slots, err := readSlots(ctx, client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("broker: read redis cluster slots: %w", err)
	}
	r := newRedis(client, client, keyspace{prefix: opts.Prefix, tagged: true}, opts)
	r.slots = slots
	r.connectTimeout = co.DialTimeout + co.ReadTimeout
	r.nodeOptions = func(addr string) *redis.Options {
		co, _ := clusterOptions(url) // parsed once above already
		o := &redis.Options{
			Addr:                  addr,
			Username:              co.Username,
			Password:              co.Password,
			CredentialsProvider:   co.CredentialsProvider,
			TLSConfig:             co.TLSConfig,
			Protocol:              co.Protocol,
			ClientName:            co.ClientName,
			DialTimeout:           co.DialTimeout,
			ReadTimeout:           co.ReadTimeout,
			WriteTimeout:          co.WriteTimeout,
			ContextTimeoutEnabled: true,
			MaxRetries:            -1,
			DialerRetries:         1,
			PoolSize:              1,
		}
		o.Dialer = dialOnce(redis.NewDialer(o))
		return o
	}
	r.start()
	return r, nil
}

// serverOptions parses a single server's URL and fills in the defaults.
func serverOptions(url string) (*redis.Options, error) {
	ro, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("broker: parse redis url: %w", err)
	}
	if ro.MaxRetries == 0 {
		ro.MaxRetries = -1
	}
	if ro.DialTimeout == 0 {
		ro.DialTimeout = 5 * time.Second
	}
	if ro.ReadTimeout == 0 {
		ro.ReadTimeout = 3 * time.Second
	}
	if ro.WriteTimeout == 0 {
		ro.WriteTimeout = 3 * time.Second
	}
	if ro.PoolTimeout == 0 {
		ro.PoolTimeout = 4 * time.Second
	}
	if ro.ClientName == "" {
		ro.ClientName = "windi"
	}
	ro.ContextTimeoutEnabled = true
	return ro, nil
}

// clusterOptions parses a cluster URL and fills in the defaults.
func clusterOptions(url string) (*redis.ClusterOptions, error) {
	co, err := redis.ParseClusterURL(url)
	if err != nil {
		return nil, fmt.Errorf("broker: parse redis cluster url: %w", err)
	}
	if co.MaxRetries == 0 {
		co.MaxRetries = -1
	}
	if co.DialTimeout == 0 {
		co.DialTimeout = 5 * time.Second
	}
	if co.ReadTimeout == 0 {
		co.ReadTimeout = 3 * time.Second
	}
	if co.WriteTimeout == 0 {
		co.WriteTimeout = 3 * time.Second
	}
	if co.PoolTimeout == 0 {
		co.PoolTimeout = 4 * time.Second
	}
	if co.ClientName == "" {
		co.ClientName = "windi"
	}
	co.ContextTimeoutEnabled = true
	return co, nil
}

func newRedis(cmd redis.UniversalClient, cluster *redis.ClusterClient, names keyspace, opts Options) *Redis {
	return &Redis{
		cmd:     cmd,
		cluster: cluster,
		names:   names,
		ttl:     opts.PresenceTTL,
		silence: opts.SilenceTimeout,
		log:     opts.Logger,
		subs:    make(map[string]*redisSub),
		byName:  make(map[string]*redisSub),
		conns:   make(map[string]*subConn),
		events:  make(chan subEvent, pubsubBuffer),
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
	}
}

// Start sets the handler.
func (r *Redis) Start(h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.handler == nil {
		r.handler = h
	}
}

func (r *Redis) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// noRetry marks a command as one go-redis must not retry after a network
// error or timeout (it may have run). Its cluster client otherwise retries
// such errors up to MaxRedirects times, which only redirects (MOVED, ASK)
// should be: those mean the command did not run.
type noRetry struct{ redis.Cmder }

func (noRetry) NoRetry() bool { return true }

// do runs cmd once.
func (r *Redis) do(ctx context.Context, cmd redis.Cmder) error {
	err := r.cmd.Process(ctx, noRetry{cmd})
	r.noteError(err)
	return err
}

// doAll runs cmds in one pipeline (in a cluster, one per master, in
// parallel) and returns the first error; each command keeps its own.
func (r *Redis) doAll(ctx context.Context, cmds []redis.Cmder) error {
	if len(cmds) == 0 {
		return nil
	}
	pipe := r.cmd.Pipeline()
	for _, c := range cmds {
		_ = pipe.Process(ctx, noRetry{c})
	}
	_, err := pipe.Exec(ctx)
	r.noteError(err)
	return err
}

// noteError asks the cluster client to read the slot owners again after an
// error that may mean the topology changed (a master down, a failover):
// go-redis reloads by itself on MOVED, but not on a dead connection.
func (r *Redis) noteError(err error) {
	if r.cluster == nil || err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return
	}
	// A reply from Redis says the node is there; only CLUSTERDOWN and
	// TRYAGAIN say something about the topology.
	var rerr redis.Error
	if errors.As(err, &rerr) && !redis.HasErrorPrefix(err, "CLUSTERDOWN") && !redis.HasErrorPrefix(err, "TRYAGAIN") {
		return
	}
	r.cluster.ReloadState(context.Background())
}

// Publish sends payload to channel: PUBLISH, or SPUBLISH in a cluster.
func (r *Redis) Publish(ctx context.Context, channel string, payload []byte) error {
	if r.isClosed() {
		return ErrClosed
	}
	if err := r.do(ctx, r.publishCmd(ctx, channel, payload)); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	return nil
}

func (r *Redis) publishCmd(ctx context.Context, channel string, payload []byte) *redis.IntCmd {
	verb := "publish"
	if r.cluster != nil {
		verb = "spublish"
	}
	return redis.NewIntCmd(ctx, verb, r.names.channel(channel), payload)
}

// PublishMany sends every publication in one pipeline (per master in a
// cluster). Commands to one connection run in order, and one channel
// always maps to one connection, so each channel keeps slice order.
func (r *Redis) PublishMany(ctx context.Context, pubs []Publication) error {
	if r.isClosed() {
		return ErrClosed
	}
	cmds := make([]redis.Cmder, len(pubs))
	for i, p := range pubs {
		cmds[i] = r.publishCmd(ctx, p.Channel, p.Payload)
	}
	if err := r.doAll(ctx, cmds); err != nil {
		return fmt.Errorf("broker: publish many: %w", err)
	}
	return nil
}

// claimCmd is SET key 1 PX ttl NX, or SETNX key 1 for ttl <= 0 (no expiry).
func (r *Redis) claimCmd(ctx context.Context, key string, ttl time.Duration) *redis.BoolCmd {
	k := r.names.claim(key)
	if ttl <= 0 {
		return redis.NewBoolCmd(ctx, "setnx", k, 1)
	}
	return redis.NewBoolCmd(ctx, "set", k, 1, "px", max(ttl.Milliseconds(), 1), "nx")
}

// Claim sets the claim key with SET NX PX; ttl <= 0 means it never expires.
func (r *Redis) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if r.isClosed() {
		return false, ErrClosed
	}
	cmd := r.claimCmd(ctx, key, ttl)
	if err := r.do(ctx, cmd); err != nil {
		return false, fmt.Errorf("broker: claim: %w", err)
	}
	return cmd.Val(), nil
}

// ClaimMany sends every SET NX PX in one pipeline (per master in a
// cluster).
func (r *Redis) ClaimMany(ctx context.Context, keys []string, ttl time.Duration) ([]bool, error) {
	out := make([]bool, len(keys))
	if r.isClosed() {
		return out, ErrClosed
	}
	cmds := make([]*redis.BoolCmd, len(keys))
	all := make([]redis.Cmder, len(keys))
	for i, k := range keys {
		cmds[i] = r.claimCmd(ctx, k, ttl)
		all[i] = cmds[i]
	}
	err := r.doAll(ctx, all)
	for i, c := range cmds {
		out[i] = c.Err() == nil && c.Val()
	}
	if err != nil {
		return out, fmt.Errorf("broker: claim many: %w", err)
	}
	return out, nil
}

// script is a Lua script run with EVALSHA, falling back to EVAL when the
// server does not have it cached (NOSCRIPT: nothing ran, so it is safe).
// go-redis's Script.Run does the same but through commands this package
// cannot mark as not retryable.
type script struct {
	src, sha string
}

func newScript(src string) script {
	return script{src: src, sha: redis.NewScript(src).Hash()}
}

func (s script) cmd(ctx context.Context, eval bool, keys []string, args ...any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	if eval {
		a = append(a, "eval", s.src)
	} else {
		a = append(a, "evalsha", s.sha)
	}
	a = append(a, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	return redis.NewCmd(ctx, a...)
}

// run runs s once with keys, all in one slot in a cluster.
func (r *Redis) run(ctx context.Context, s script, keys []string, args ...any) *redis.Cmd {
	cmd := s.cmd(ctx, false, keys, args...)
	if err := r.do(ctx, cmd); redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd = s.cmd(ctx, true, keys, args...)
		_ = r.do(ctx, cmd)
	}
	return cmd
}

// runGrouped runs s once per slot's worth of keys (once for all keys on a
// single server), in one pipeline, so no call spans slots (CROSSSLOT). It
// returns, for each group, the indexes into keys it covered and its
// command.
func (r *Redis) runGrouped(ctx context.Context, s script, keys []string, args ...any) ([][]int, []*redis.Cmd, error) {
	var groups [][]int
	if r.cluster == nil {
		all := make([]int, len(keys))
		for i := range keys {
			all[i] = i
		}
		groups = [][]int{all}
	} else {
		bySlot := make(map[int]int) // slot -> index into groups
		for i, k := range keys {
			slot := keySlot(k)
			g, ok := bySlot[slot]
			if !ok {
				g = len(groups)
				bySlot[slot] = g
				groups = append(groups, nil)
			}
			groups[g] = append(groups[g], i)
		}
	}
	groupKeys := func(g []int) []string {
		ks := make([]string, len(g))
		for j, i := range g {
			ks[j] = keys[i]
		}
		return ks
	}
	cmds := make([]*redis.Cmd, len(groups))
	all := make([]redis.Cmder, len(groups))
	for i, g := range groups {
		cmds[i] = s.cmd(ctx, false, groupKeys(g), args...)
		all[i] = cmds[i]
	}
	err := r.doAll(ctx, all)
	if err != nil {
		// Run again with EVAL those the server had no cached copy for.
		var again []redis.Cmder
		for i, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				cmds[i] = s.cmd(ctx, true, groupKeys(groups[i]), args...)
				again = append(again, cmds[i])
			}
		}
		if len(again) > 0 {
			_ = r.doAll(ctx, again)
			err = nil
			for _, c := range cmds {
				if c.Err() != nil {
					err = c.Err()
					break
				}
			}
		}
	}
	return groups, cmds, err
}

// The presence scripts keep one sorted set per user, member = replica,
// score = expiry in Unix milliseconds by the Redis server's clock, so
// replicas with skewed clocks agree (in a cluster, by the clock of the
// shard that holds the user). Each drops expired members first. The set
// itself expires after 2×TTL without a join or refresh, which collects
// users whose every replica died.
const presenceNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// presenceJoin: KEYS[1] user set; ARGV replica, ttl ms. Returns 1 when the
// set held no live entry before.
var presenceJoin = newScript(presenceNow + `
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
if before == 0 then return 1 end
return 0
`)

// presenceLeave: KEYS[1] user set; ARGV replica. Returns 1 when this call
// emptied the set of live entries (removing this replica's entry or, when
// that had expired, the last expired ones).
var presenceLeave = newScript(presenceNow + `
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
removed = removed + redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
redis.call('DEL', KEYS[1])
if removed > 0 then return 1 end
return 0
`)

// presenceRefresh: KEYS user sets; ARGV replica, ttl ms.
var presenceRefresh = newScript(presenceNow + `
local ttl = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('PEXPIRE', key, 2 * ttl)
end
return 0
`)

// presenceOnline: KEYS user sets. Returns, per key, how many live entries
// it holds.
var presenceOnline = newScript(presenceNow + `
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
end
return out
`)

// hitScript: KEYS[1] window counter; ARGV window ms. The first hit of a
// window sets the counter's expiry, so it goes when the window does.
var hitScript = newScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`)

// PresenceJoin records replica's entry for userID.
func (r *Redis) PresenceJoin(ctx context.Context, replica string, userID int64) (bool, error) {
	if r.isClosed() {
		return false, ErrClosed
	}
	n, err := r.run(ctx, presenceJoin, []string{r.names.presence(userID)}, replica, r.ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("broker: presence join: %w", err)
	}
	return n == 1, nil
}

// PresenceLeave removes replica's entry for userID.
func (r *Redis) PresenceLeave(ctx context.Context, replica string, userID int64) (bool, error) {
	if r.isClosed() {
		return false, ErrClosed
	}
	n, err := r.run(ctx, presenceLeave, []string{r.names.presence(userID)}, replica).Int64()
	if err != nil {
		return false, fmt.Errorf("broker: presence leave: %w", err)
	}
	return n == 1, nil
}

func (r *Redis) presenceKeys(userIDs []int64) []string {
	keys := make([]string, len(userIDs))
	for i, id := range userIDs {
		keys[i] = r.names.presence(id)
	}
	return keys
}

// PresenceRefresh extends replica's entries for userIDs: one script call
// on a single server, one per slot in a cluster (all in one pipeline).
func (r *Redis) PresenceRefresh(ctx context.Context, replica string, userIDs []int64) error {
	if r.isClosed() {
		return ErrClosed
	}
	if len(userIDs) == 0 {
		return nil
	}
	if _, _, err := r.runGrouped(ctx, presenceRefresh, r.presenceKeys(userIDs), replica, r.ttl.Milliseconds()); err != nil {
		return fmt.Errorf("broker: presence refresh: %w", err)
	}
	return nil
}

// Online returns the users of userIDs with a live entry: one script call
// on a single server, one per slot in a cluster (all in one pipeline).
func (r *Redis) Online(ctx context.Context, userIDs []int64) ([]int64, error) {
	if r.isClosed() {
		return nil, ErrClosed
	}
	if len(userIDs) == 0 {
		return nil, nil
	}
	groups, cmds, err := r.runGrouped(ctx, presenceOnline, r.presenceKeys(userIDs))
	if err != nil {
		return nil, fmt.Errorf("broker: online: %w", err)
	}
	var online []int64
	for g, cmd := range cmds {
		counts, err := cmd.Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("broker: online: %w", err)
		}
		for j, n := range counts {
			if n > 0 && j < len(groups[g]) {
				online = append(online, userIDs[groups[g][j]])
			}
		}
	}
	return online, nil
}

// Hit counts an event for key in the current window, by the local clock.
func (r *Redis) Hit(ctx context.Context, key string, window time.Duration) (int64, error) {
	if r.isClosed() {
		return 0, ErrClosed
	}
	if window < time.Millisecond {
		return 0, errBadWindow
	}
	k := r.names.hit(key, windowIndex(time.Now(), window))
	n, err := r.run(ctx, hitScript, []string{k}, window.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("broker: hit: %w", err)
	}
	return n, nil
}

// Hits implements Broker.
func (r *Redis) Hits(ctx context.Context, key string, window time.Duration) (int64, error) {
	if r.isClosed() {
		return 0, ErrClosed
	}
	if window < time.Millisecond {
		return 0, errBadWindow
	}
	cmd := redis.NewStringCmd(ctx, "get", r.names.hit(key, windowIndex(time.Now(), window)))
	err := r.do(ctx, cmd)
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("broker: hits: %w", err)
	}
	n, err := cmd.Int64()
	if err != nil {
		return 0, fmt.Errorf("broker: hits: %w", err)
	}
	return n, nil
}

// Ping pings the server; in a cluster, every master, so it fails while a
// shard has no reachable master (during a failover, until the replica has
// taken over).
func (r *Redis) Ping(ctx context.Context) error {
	if r.isClosed() {
		return ErrClosed
	}
	var err error
	if r.cluster != nil {
		err = r.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
		r.noteError(err)
	} else {
		err = r.cmd.Ping(ctx).Err()
	}
	if err != nil {
		return fmt.Errorf("broker: ping: %w", err)
	}
	return nil
}

// Close drops every subscription connection, waits for the broker's
// goroutines (and so for any handler call in progress) and closes the
// client. It must not be called from the handler.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.quit)
	conns := make([]*subConn, 0, len(r.conns))
	for _, c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()

	for _, c := range conns {
		r.drop(c, nil)
	}
	r.wg.Wait()
	if err := r.cmd.Close(); err != nil {
		return fmt.Errorf("broker: close: %w", err)
	}
	return nil
}
