package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the broker that lets replicas share delivery, dedup keys,
// presence and rate limits through one Redis server.
//
// It holds one *redis.Client for commands and one *redis.PubSub for
// subscriptions. go-redis reconnects the PubSub by itself and re-sends
// SUBSCRIBE for every channel; messages published in between are lost.
// Redis spots that re-subscription (a "subscribe" confirmation for a
// channel already confirmed) and reports it through Handler.Resubscribed.
//
// Commands are never retried: PUBLISH, SET NX, INCR and the presence
// scripts are not idempotent, and a retry after a lost reply would
// duplicate a message or misreport a claim. Errors go to the caller.
type Redis struct {
	client *redis.Client
	pubsub *redis.PubSub
	prefix string
	ttl    time.Duration

	// subMu serializes SUBSCRIBE and UNSUBSCRIBE with the state changes that
	// go with them, so go-redis's channel set and subs agree.
	subMu sync.Mutex

	// mu guards the fields below.
	mu      sync.Mutex
	handler Handler
	subs    map[string]*redisSub // by channel name without prefix
	closed  bool

	quit chan struct{} // closed by Close; wakes Subscribe waiters
	done chan struct{} // closed when the reader goroutine exits
}

var _ Broker = (*Redis)(nil)

// redisSub is one channel's subscription. done is closed once the
// subscription is confirmed (confirmed true) or abandoned (err set).
type redisSub struct {
	done      chan struct{}
	confirmed bool
	err       error
}

const (
	// pubsubBuffer is how many messages go-redis buffers for the reader
	// before it starts dropping (after a minute full); the default 100 is
	// far too small for a busy replica.
	pubsubBuffer = 65536
	// resubscribeDebounce collects the confirmations of one reconnect into
	// one Resubscribed call.
	resubscribeDebounce = 25 * time.Millisecond
	// rollbackTimeout bounds the UNSUBSCRIBE that undoes a failed Subscribe.
	rollbackTimeout = 2 * time.Second
)

var errUnsubscribed = errors.New("broker: unsubscribed while subscribing")

// NewRedis connects to the Redis at url (redis://… as redis.ParseURL reads
// it, query options included) and pings it. Timeouts not set in the URL
// default to 5s to dial and 3s to read or write; retries default to none.
func NewRedis(ctx context.Context, url string, opts Options) (*Redis, error) {
	opts = opts.withDefaults()
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

	client := redis.NewClient(ro)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("broker: ping redis: %w", err)
	}
	r := &Redis{
		client: client,
		pubsub: client.Subscribe(ctx),
		prefix: opts.Prefix,
		ttl:    opts.PresenceTTL,
		subs:   make(map[string]*redisSub),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go r.read(r.pubsub.ChannelWithSubscriptions(redis.WithChannelSize(pubsubBuffer)))
	return r, nil
}

// Start sets the handler.
func (r *Redis) Start(h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.handler == nil {
		r.handler = h
	}
}

// read routes what the PubSub receives: messages to the handler,
// confirmations to Subscribe waiters, re-confirmations (a reconnect) to
// Resubscribed. It lives until Close closes the PubSub.
func (r *Redis) read(ch <-chan any) {
	defer close(r.done)
	var (
		resubscribed []string
		timer        *time.Timer
		timerC       <-chan time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Message:
				name, ok := strings.CutPrefix(m.Channel, r.prefix)
				if !ok {
					continue
				}
				r.mu.Lock()
				_, subscribed := r.subs[name]
				h := r.handler
				r.mu.Unlock()
				if subscribed && h != nil {
					h.Receive(name, []byte(m.Payload))
				}
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				name, ok := strings.CutPrefix(m.Channel, r.prefix)
				if ok && r.confirm(name) {
					resubscribed = append(resubscribed, name)
					if timerC == nil {
						timer = time.NewTimer(resubscribeDebounce)
						timerC = timer.C
					}
				}
			}
		case <-timerC:
			timerC = nil
			r.reportResubscribed(resubscribed)
			resubscribed = nil
		}
	}
}

// confirm records a "subscribe" confirmation for channel and reports
// whether it is a re-subscription after a reconnect.
//
// A confirmation can also be stale: the reply to a SUBSCRIBE whose
// Subscribe call gave up, arriving after a new Subscribe for the same
// channel. It then confirms the new one slightly early (before Redis has
// processed the new SUBSCRIBE); that needs a timeout followed by an
// immediate retry and costs at most the messages of that gap.
func (r *Redis) confirm(channel string) (resubscribed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.subs[channel]
	switch {
	case s == nil:
		return false
	case s.confirmed:
		return true
	default:
		s.confirmed = true
		close(s.done)
		return false
	}
}

// reportResubscribed calls the handler with the channels, deduplicated,
// that are still subscribed.
func (r *Redis) reportResubscribed(channels []string) {
	seen := make(map[string]bool, len(channels))
	var report []string
	r.mu.Lock()
	h := r.handler
	for _, c := range channels {
		if _, ok := r.subs[c]; ok && !seen[c] {
			seen[c] = true
			report = append(report, c)
		}
	}
	r.mu.Unlock()
	if h != nil && len(report) > 0 {
		h.Resubscribed(report)
	}
}

// Publish sends payload to channel.
func (r *Redis) Publish(ctx context.Context, channel string, payload []byte) error {
	if r.isClosed() {
		return ErrClosed
	}
	if err := r.client.Publish(ctx, r.prefix+channel, payload).Err(); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	return nil
}

// PublishMany sends every publication in one pipeline.
func (r *Redis) PublishMany(ctx context.Context, pubs []Publication) error {
	if r.isClosed() {
		return ErrClosed
	}
	if len(pubs) == 0 {
		return nil
	}
	pipe := r.client.Pipeline()
	for _, p := range pubs {
		pipe.Publish(ctx, r.prefix+p.Channel, p.Payload)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	return nil
}

func (r *Redis) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Subscribe sends SUBSCRIBE and waits for Redis to confirm it, or for ctx.
// Concurrent calls for one channel share the first one's outcome.
func (r *Redis) Subscribe(ctx context.Context, channel string) error {
	r.subMu.Lock()
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		r.subMu.Unlock()
		return ErrClosed
	case r.handler == nil:
		r.mu.Unlock()
		r.subMu.Unlock()
		return errNotStarted
	}
	if s := r.subs[channel]; s != nil {
		r.mu.Unlock()
		r.subMu.Unlock()
		return r.wait(ctx, s)
	}
	s := &redisSub{done: make(chan struct{})}
	r.subs[channel] = s
	r.mu.Unlock()
	err := r.pubsub.Subscribe(ctx, r.prefix+channel)
	r.subMu.Unlock()
	if err != nil {
		err = fmt.Errorf("broker: subscribe: %w", err)
		r.abandon(channel, s, err)
		return err
	}
	if err := r.wait(ctx, s); err != nil {
		if r.abandon(channel, s, err) {
			return err
		}
	}
	return nil
}

// wait blocks until s is confirmed or abandoned, ctx is done, or the
// broker closes.
func (r *Redis) wait(ctx context.Context, s *redisSub) error {
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("broker: subscribe: %w", ctx.Err())
	case <-r.quit:
		return ErrClosed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return s.err
}

// abandon undoes a Subscribe that failed with err, unless s was confirmed
// meanwhile; it reports whether it did.
func (r *Redis) abandon(channel string, s *redisSub, err error) bool {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.mu.Lock()
	if s.confirmed {
		r.mu.Unlock()
		return false
	}
	if r.subs[channel] == s {
		delete(r.subs, channel)
	}
	if s.err == nil {
		s.err = err
		close(s.done)
	}
	r.mu.Unlock()
	// go-redis drops the channel from its set even when the write fails, so
	// a later reconnect does not resubscribe it.
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	_ = r.pubsub.Unsubscribe(ctx, r.prefix+channel)
	return true
}

// Unsubscribe stops delivery for channel at once; Redis stops sending it
// shortly after.
func (r *Redis) Unsubscribe(ctx context.Context, channel string) error {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	s := r.subs[channel]
	if s == nil {
		r.mu.Unlock()
		return nil
	}
	delete(r.subs, channel)
	if !s.confirmed && s.err == nil {
		s.err = errUnsubscribed
		close(s.done)
	}
	r.mu.Unlock()
	if err := r.pubsub.Unsubscribe(ctx, r.prefix+channel); err != nil {
		// The channel is gone from go-redis's set and from subs, so nothing
		// more is delivered; a dead connection takes the rest with it.
		return fmt.Errorf("broker: unsubscribe: %w", err)
	}
	return nil
}

// Claim sets prefix+key with SET NX PX; ttl <= 0 means it never expires.
func (r *Redis) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if r.isClosed() {
		return false, ErrClosed
	}
	if ttl < 0 {
		ttl = 0
	}
	ok, err := r.client.SetNX(ctx, r.prefix+key, 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("broker: claim: %w", err)
	}
	return ok, nil
}

// ClaimMany sets every key with SET NX PX in one pipeline.
func (r *Redis) ClaimMany(ctx context.Context, keys []string, ttl time.Duration) ([]bool, error) {
	if r.isClosed() {
		return nil, ErrClosed
	}
	if len(keys) == 0 {
		return nil, nil
	}
	if ttl < 0 {
		ttl = 0
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.BoolCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.SetNX(ctx, r.prefix+k, 1, ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("broker: claim: %w", err)
	}
	out := make([]bool, len(keys))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// The presence scripts keep one sorted set per user, member = replica,
// score = expiry in Unix milliseconds by the Redis server's clock, so
// replicas with skewed clocks agree. Each drops expired members first.
// The set itself expires after 2×TTL without a join or refresh, which
// collects users whose every replica died.
const presenceNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// presenceJoin: KEYS[1] user set; ARGV replica, ttl ms. Returns 1 when the
// set held no live entry before.
var presenceJoin = redis.NewScript(presenceNow + `
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
var presenceLeave = redis.NewScript(presenceNow + `
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
removed = removed + redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
redis.call('DEL', KEYS[1])
if removed > 0 then return 1 end
return 0
`)

// presenceRefresh: KEYS user sets; ARGV replica, ttl ms.
var presenceRefresh = redis.NewScript(presenceNow + `
local ttl = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('PEXPIRE', key, 2 * ttl)
end
return 0
`)

// presenceOnline: KEYS user sets. Returns, per key, how many live entries
// it holds.
var presenceOnline = redis.NewScript(presenceNow + `
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
end
return out
`)

// hitScript: KEYS[1] window counter; ARGV window ms. The first hit of a
// window sets the counter's expiry, so it goes when the window does.
var hitScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`)

func (r *Redis) presenceKey(userID int64) string {
	return r.prefix + "presence:" + strconv.FormatInt(userID, 10)
}

// PresenceJoin records replica's entry for userID.
func (r *Redis) PresenceJoin(ctx context.Context, replica string, userID int64) (bool, error) {
	if r.isClosed() {
		return false, ErrClosed
	}
	n, err := presenceJoin.Run(ctx, r.client, []string{r.presenceKey(userID)}, replica, r.ttl.Milliseconds()).Int64()
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
	n, err := presenceLeave.Run(ctx, r.client, []string{r.presenceKey(userID)}, replica).Int64()
	if err != nil {
		return false, fmt.Errorf("broker: presence leave: %w", err)
	}
	return n == 1, nil
}

// PresenceRefresh extends replica's entries for userIDs in one script call.
func (r *Redis) PresenceRefresh(ctx context.Context, replica string, userIDs []int64) error {
	if r.isClosed() {
		return ErrClosed
	}
	if len(userIDs) == 0 {
		return nil
	}
	keys := make([]string, len(userIDs))
	for i, id := range userIDs {
		keys[i] = r.presenceKey(id)
	}
	if err := presenceRefresh.Run(ctx, r.client, keys, replica, r.ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("broker: presence refresh: %w", err)
	}
	return nil
}

// Online returns the users of userIDs with a live entry, in one script call.
func (r *Redis) Online(ctx context.Context, userIDs []int64) ([]int64, error) {
	if r.isClosed() {
		return nil, ErrClosed
	}
	if len(userIDs) == 0 {
		return nil, nil
	}
	keys := make([]string, len(userIDs))
	for i, id := range userIDs {
		keys[i] = r.presenceKey(id)
	}
	counts, err := presenceOnline.Run(ctx, r.client, keys).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("broker: online: %w", err)
	}
	var online []int64
	for i, n := range counts {
		if n > 0 && i < len(userIDs) {
			online = append(online, userIDs[i])
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
	k := r.prefix + "rl:" + key + ":" + strconv.FormatInt(windowIndex(time.Now(), window), 10)
	n, err := hitScript.Run(ctx, r.client, []string{k}, window.Milliseconds()).Int64()
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
	k := r.prefix + "rl:" + key + ":" + strconv.FormatInt(windowIndex(time.Now(), window), 10)
	n, err := r.client.Get(ctx, k).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("broker: hits: %w", err)
	}
	return n, nil
}

// Ping pings Redis.
func (r *Redis) Ping(ctx context.Context) error {
	if r.isClosed() {
		return ErrClosed
	}
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("broker: ping: %w", err)
	}
	return nil
}

// Close closes the PubSub, waits for the reader goroutine (and so for any
// handler call in progress) and closes the client. It must not be called
// from the handler.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.quit)
	r.mu.Unlock()

	err := r.pubsub.Close()
	<-r.done
	if cerr := r.client.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("broker: close: %w", err)
	}
	return nil
}
