package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file is the Redis broker's subscription side.
//
// Every subscription connection (subConn) is a go-redis PubSub on a client
// of its own whose dialer connects once only: when the connection breaks,
// go-redis's own reconnect fails, and the broker drops the subConn and
// subscribes its channels again on a new one. go-redis would otherwise
// reconnect by itself and re-send one SSUBSCRIBE for all of its channels,
// which a cluster refuses (CROSSSLOT) unless they share a slot, and it would
// not notice a silent connection at all: its health check writes a PING,
// which succeeds on a half-open connection, and then reads with no
// deadline.
//
// So each subConn has a reader that reads with a deadline of
// SilenceTimeout and a pinger that sends PING every SilenceTimeout/3; Redis
// answers on the same connection, so a live connection is never silent for
// SilenceTimeout (anything it receives counts), and one that is gets
// dropped. A PING on the subscription connection itself, rather than a
// heartbeat published through the command connection, tests exactly the
// path that delivers.
//
// State of a channel (redisSub): conn is where its SUBSCRIBE went (nil: it
// needs one: an orphan, which the maintainer goroutine subscribes again,
// with backoff while Redis is unreachable); live says Redis confirmed it on
// conn, and only then are messages from conn delivered. A subConn keeps,
// per channel, the SUBSCRIBE and UNSUBSCRIBE commands it sent and Redis
// has not answered yet, in order, so each confirmation is matched to the
// command it answers; an UNSUBSCRIBE confirmation nobody asked for means
// Redis dropped the subscription (in a cluster: its slot moved, or its
// master became a replica), and the channel becomes an orphan.
//
// Readers hand messages to one dispatcher goroutine, which calls the
// handler, so handler calls never overlap; a channel's messages come from
// one connection at a time, so they stay in order.

const (
	// pubsubBuffer is how many messages readers queue for the dispatcher
	// before they stop reading (and Redis buffers for them).
	pubsubBuffer = 65536
	// resubscribeDebounce collects the confirmations of one reconnect into
	// one Resubscribed call.
	resubscribeDebounce = 25 * time.Millisecond
	// rollbackTimeout bounds the UNSUBSCRIBE that undoes a failed Subscribe.
	rollbackTimeout = 2 * time.Second
	// Backoff of the maintainer while Redis (or a shard) is unreachable:
	// dials are cheap, and a short backoff is a short loss window.
	minBackoff = 50 * time.Millisecond
	maxBackoff = 500 * time.Millisecond
	// readyWait is how long the maintainer waits for new connections to
	// dial before it subscribes what it can; the rest waits for its next
	// round, so a node that hangs does not hold up the others.
	readyWait = 250 * time.Millisecond
	// slotsTimeout bounds one CLUSTER SLOTS query.
	slotsTimeout = time.Second
)

var (
	errUnsubscribed = errors.New("broker: unsubscribed while subscribing")
	errDialedOnce   = errors.New("broker: subscription connection lost")
	errNoRoute      = errors.New("broker: no cluster master owns the channel's slot")
	errSilent       = errors.New("broker: subscription connection silent")
)

// redisSub is one channel's subscription. done is closed once the
// subscription is confirmed (confirmed true) or abandoned (err set).
type redisSub struct {
	channel string // logical name
	name    string // Redis name
	slot    int    // cluster hash slot of name; 0 on a single server
	done    chan struct{}

	// Guarded by Redis.mu.
	confirmed bool     // confirmed at least once
	err       error    // why it was abandoned
	conn      *subConn // where its SUBSCRIBE was last sent; nil: an orphan
	live      bool     // confirmed on conn
}

// subConn is one subscription connection, to the node at addr.
type subConn struct {
	addr   string
	client *redis.Client
	ps     *redis.PubSub
	ready  chan struct{} // closed once the first dial is done
	stop   chan struct{} // closed when the connection is dropped

	// dialErr is the first dial's error; set before ready closes.
	dialErr error

	// Guarded by Redis.mu.
	dead bool
	// pending holds, per Redis channel name, the commands sent and not yet
	// answered, oldest first: a redisSub for a SUBSCRIBE, nil for an
	// UNSUBSCRIBE.
	pending map[string][]*redisSub
}

// subEvent is what readers hand to the dispatcher: a message for sub that
// conn received, or (resub) that sub was confirmed again after its
// connection was lost.
type subEvent struct {
	sub     *redisSub
	conn    *subConn
	payload []byte
	resub   bool
}

// slotRange says which master owns slots start..end.
type slotRange struct {
	start, end int
	addr       string
}

// dialOnce wraps dial so it connects at most once: see the file comment.
func dialOnce(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var used atomic.Bool
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if used.Load() {
			return nil, errDialedOnce
		}
		c, err := dial(ctx, network, addr)
		if err == nil {
			used.Store(true)
		}
		return c, err
	}
}

var stripeSeed = maphash.MakeSeed()

func stripe(name string) int {
	return int(maphash.String(stripeSeed, name) % 64)
}

// start starts the dispatcher and the maintainer.
func (r *Redis) start() {
	r.wg.Add(2)
	go r.dispatch()
	go r.maintain()
}

// readSlots reads which master owns which slots (CLUSTER SHARDS, Redis 7).
func readSlots(ctx context.Context, c *redis.ClusterClient) ([]slotRange, error) {
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []slotRange
	for _, sh := range shards {
		// The shard's master; a failed one (the old master, after a
		// failover) only when there is no other.
		var addr string
		online := false
		for _, n := range sh.Nodes {
			port := n.Port
			if port == 0 {
				port = n.TLSPort
			}
			if n.Role != "master" || n.Endpoint == "" || n.Endpoint == "?" || port <= 0 || (online && n.Health != "online") {
				continue
			}
			addr = net.JoinHostPort(n.Endpoint, strconv.FormatInt(port, 10))
			online = n.Health == "online"
		}
		if addr == "" {
			continue // no master: its slots have no route until one is elected
		}
		for _, sr := range sh.Slots {
			out = append(out, slotRange{start: int(sr.Start), end: int(sr.End), addr: addr})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no slot has a master")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out, nil
}

// route returns the address of the node a channel in slot subscribes on;
// called with mu held.
func (r *Redis) route(slot int) (string, bool) {
	if r.cluster == nil {
		return r.addr, true
	}
	i := sort.Search(len(r.slots), func(i int) bool { return r.slots[i].end >= slot })
	if i < len(r.slots) && r.slots[i].start <= slot {
		return r.slots[i].addr, true
	}
	return "", false
}

// connTo returns the live subscription connection to addr, starting one
// (it dials in the background) when there is none, or nil once the broker
// is closed; called with mu held.
func (r *Redis) connTo(addr string) *subConn {
	if r.closed {
		return nil
	}
	if c := r.conns[addr]; c != nil {
		return c
	}
	client := redis.NewClient(r.nodeOptions(addr))
	c := &subConn{
		addr:    addr,
		client:  client,
		ps:      client.Subscribe(context.Background()), // no channel: does not dial
		ready:   make(chan struct{}),
		stop:    make(chan struct{}),
		pending: make(map[string][]*redisSub),
	}
	r.conns[addr] = c
	r.wg.Add(2)
	go r.read(c)
	go r.ping(c)
	return c
}

// waitReady waits for c's first dial.
func (r *Redis) waitReady(ctx context.Context, c *subConn) error {
	select {
	case <-c.ready:
		return c.dialErr
	case <-ctx.Done():
		return ctx.Err()
	case <-r.quit:
		return ErrClosed
	}
}

// isReady reports whether c has dialed.
func isReady(c *subConn) bool {
	select {
	case <-c.ready:
		return c.dialErr == nil
	default:
		return false
	}
}

// drop closes c and makes orphans of its channels, for the maintainer to
// subscribe again elsewhere; err says why (nil: the broker is closing).
// Dropping twice is a no-op.
func (r *Redis) drop(c *subConn, err error) {
	r.mu.Lock()
	if c.dead {
		r.mu.Unlock()
		return
	}
	c.dead = true
	if r.conns[c.addr] == c {
		delete(r.conns, c.addr)
	}
	orphans := 0
	for _, s := range r.subs {
		if s.conn == c {
			s.conn, s.live = nil, false
			orphans++
		}
	}
	if err != nil {
		r.reroute = true
	}
	r.mu.Unlock()
	close(c.stop)
	_ = c.ps.Close()
	_ = c.client.Close()
	if orphans > 0 {
		if err != nil {
			r.log.Warn("broker subscription connection lost; subscribing again", "event", "broker.conn_lost", "addr", c.addr, "channels", orphans, "err", err)
		}
		r.poke()
	}
}

// poke wakes the maintainer.
func (r *Redis) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// read dials c, then routes what it receives until c is dropped:
// messages to the dispatcher, confirmations to their subscriptions.
func (r *Redis) read(c *subConn) {
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), r.connectTimeout)
	c.dialErr = c.ps.Ping(ctx) // dials; the PONG is read below
	cancel()
	close(c.ready)
	if c.dialErr != nil {
		r.drop(c, c.dialErr)
		return
	}
	for {
		m, err := c.ps.ReceiveTimeout(context.Background(), r.silence)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = errSilent
			}
			r.drop(c, err)
			return
		}
		switch m := m.(type) {
		case *redis.Message:
			r.mu.Lock()
			s := r.byName[m.Channel]
			ok := s != nil && s.conn == c && s.live
			r.mu.Unlock()
			if ok && !r.emit(c, subEvent{sub: s, conn: c, payload: []byte(m.Payload)}) {
				return
			}
		case *redis.Subscription:
			if ev, ok := r.confirm(c, m); ok && !r.emit(c, ev) {
				return
			}
		}
	}
}

// emit hands ev to the dispatcher, unless c is dropped or the broker
// closes first.
func (r *Redis) emit(c *subConn, ev subEvent) bool {
	select {
	case r.events <- ev:
		return true
	case <-c.stop:
		return false
	case <-r.quit:
		return false
	}
}

// confirm matches a (un)subscribe confirmation on c to the command it
// answers. It returns a Resubscribed event when a channel confirmed before,
// on a connection since lost, is confirmed again.
func (r *Redis) confirm(c *subConn, m *redis.Subscription) (subEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := c.pending[m.Channel]
	var head *redisSub
	answered := len(q) > 0
	if answered {
		head = q[0]
	}
	switch m.Kind {
	case "subscribe", "ssubscribe":
		if !answered {
			return subEvent{}, false
		}
		c.pop(m.Channel)
		s := head
		if s == nil || r.byName[m.Channel] != s || s.conn != c {
			return subEvent{}, false // stale: abandoned or moved on
		}
		s.live = true
		if !s.confirmed {
			s.confirmed = true
			close(s.done)
			return subEvent{}, false
		}
		return subEvent{sub: s, resub: true}, true
	case "unsubscribe", "sunsubscribe":
		if answered && head == nil {
			c.pop(m.Channel)
			return subEvent{}, false
		}
		// Nobody asked: Redis dropped the subscription (its slot moved).
		if s := r.byName[m.Channel]; s != nil && s.conn == c {
			s.conn, s.live = nil, false
			r.reroute = true
			r.poke()
		}
	}
	return subEvent{}, false
}

// pop drops the oldest pending command for name; called with mu held.
func (c *subConn) pop(name string) {
	q := c.pending[name]
	if len(q) <= 1 {
		delete(c.pending, name)
		return
	}
	q[0] = nil
	c.pending[name] = q[1:]
}

// ping sends PING on c every SilenceTimeout/3 until c is dropped.
func (r *Redis) ping(c *subConn) {
	defer r.wg.Done()
	select {
	case <-c.ready:
	case <-c.stop:
		return
	}
	every := max(r.silence/3, time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.stop:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.silence)
		err := c.ps.Ping(ctx)
		cancel()
		if err != nil {
			r.drop(c, err)
			return
		}
	}
}

// dispatch calls the handler with what readers received, and reports
// re-subscriptions, until Close.
func (r *Redis) dispatch() {
	defer r.wg.Done()
	var (
		resubscribed []*redisSub
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
		case ev := <-r.events:
			if ev.resub {
				resubscribed = append(resubscribed, ev.sub)
				if timerC == nil {
					timer = time.NewTimer(resubscribeDebounce)
					timerC = timer.C
				}
				continue
			}
			// Unsubscribe stops delivery at once, even of messages queued.
			// So does the loss of the connection: a message it delivered
			// could otherwise come after those of the next connection, out
			// of order, and it is covered by the Resubscribed report that
			// follows.
			r.mu.Lock()
			current := r.subs[ev.sub.channel] == ev.sub && ev.sub.conn == ev.conn
			h := r.handler
			r.mu.Unlock()
			if current && h != nil {
				h.Receive(ev.sub.channel, ev.payload)
			}
		case <-timerC:
			timerC = nil
			r.reportResubscribed(resubscribed)
			resubscribed = nil
		case <-r.quit:
			return
		}
	}
}

// reportResubscribed calls the handler with the channels, deduplicated,
// that are still subscribed.
func (r *Redis) reportResubscribed(subs []*redisSub) {
	seen := make(map[string]bool, len(subs))
	var report []string
	r.mu.Lock()
	h := r.handler
	for _, s := range subs {
		if r.subs[s.channel] == s && !seen[s.channel] {
			seen[s.channel] = true
			report = append(report, s.channel)
		}
	}
	r.mu.Unlock()
	if h != nil && len(report) > 0 {
		h.Resubscribed(report)
	}
}

// send writes one (un)subscribe command for names on c: SUBSCRIBE or
// SSUBSCRIBE (unsubscribe false), UNSUBSCRIBE or SUNSUBSCRIBE. The caller
// holds the names' stripes and has recorded the command in c.pending.
// Names must share a slot in a cluster.
func (r *Redis) send(ctx context.Context, c *subConn, unsubscribe bool, names ...string) error {
	var err error
	switch {
	case r.cluster != nil && unsubscribe:
		err = c.ps.SUnsubscribe(ctx, names...)
	case r.cluster != nil:
		err = c.ps.SSubscribe(ctx, names...)
	case unsubscribe:
		err = c.ps.Unsubscribe(ctx, names...)
	default:
		err = c.ps.Subscribe(ctx, names...)
	}
	return err
}

// Subscribe sends SUBSCRIBE (SSUBSCRIBE in a cluster) on the connection to
// the node that owns the channel and waits for Redis to confirm it, or for
// ctx. Concurrent calls for one channel share the first one's outcome.
func (r *Redis) Subscribe(ctx context.Context, channel string) error {
	name := r.names.channel(channel)
	st := &r.stripes[stripe(name)]
	st.Lock()
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		st.Unlock()
		return ErrClosed
	case r.handler == nil:
		r.mu.Unlock()
		st.Unlock()
		return errNotStarted
	}
	if s := r.subs[channel]; s != nil {
		r.mu.Unlock()
		st.Unlock()
		return r.wait(ctx, s)
	}
	s := &redisSub{channel: channel, name: name, done: make(chan struct{})}
	if r.cluster != nil {
		s.slot = keySlot(name)
	}
	r.subs[channel], r.byName[name] = s, s
	addr, ok := r.route(s.slot)
	var c *subConn
	if ok {
		c = r.connTo(addr)
	}
	r.mu.Unlock()

	err := errNoRoute
	if ok {
		err = r.waitReady(ctx, c)
	}
	if err == nil {
		r.mu.Lock()
		if c.dead {
			// Lost already: s stays an orphan, for the maintainer.
			r.mu.Unlock()
			r.poke()
		} else {
			s.conn = c
			c.pending[name] = append(c.pending[name], s)
			r.mu.Unlock()
			if err = r.send(ctx, c, false, name); err != nil {
				r.drop(c, err)
			}
		}
	}
	st.Unlock()
	if err != nil {
		err = fmt.Errorf("broker: subscribe: %w", err)
		r.abandon(s, err)
		return err
	}
	if err := r.wait(ctx, s); err != nil {
		if r.abandon(s, err) {
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
func (r *Redis) abandon(s *redisSub, err error) bool {
	st := &r.stripes[stripe(s.name)]
	st.Lock()
	defer st.Unlock()
	r.mu.Lock()
	if s.confirmed {
		r.mu.Unlock()
		return false
	}
	if r.subs[s.channel] == s {
		delete(r.subs, s.channel)
		delete(r.byName, s.name)
	}
	if s.err == nil {
		s.err = err
		close(s.done)
	}
	c := s.conn
	s.conn, s.live = nil, false
	if c != nil && !c.dead {
		c.pending[s.name] = append(c.pending[s.name], nil)
	} else {
		c = nil
	}
	r.mu.Unlock()
	if c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
		defer cancel()
		if err := r.send(ctx, c, true, s.name); err != nil {
			r.drop(c, err)
		}
	}
	return true
}

// Unsubscribe stops delivery for channel at once; Redis stops sending it
// shortly after.
func (r *Redis) Unsubscribe(ctx context.Context, channel string) error {
	name := r.names.channel(channel)
	st := &r.stripes[stripe(name)]
	st.Lock()
	defer st.Unlock()
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
	delete(r.byName, name)
	if !s.confirmed && s.err == nil {
		s.err = errUnsubscribed
		close(s.done)
	}
	c := s.conn
	s.conn, s.live = nil, false
	if c != nil && !c.dead {
		c.pending[name] = append(c.pending[name], nil)
	} else {
		c = nil
	}
	r.mu.Unlock()
	if c == nil {
		return nil
	}
	if err := r.send(ctx, c, true, name); err != nil {
		// The channel is gone from subs, so nothing more is delivered; the
		// connection is dropped, which takes the rest with it.
		r.drop(c, err)
		return fmt.Errorf("broker: unsubscribe: %w", err)
	}
	return nil
}

// maintain subscribes orphans again until Close: after a connection is
// lost or a slot moves, with backoff while that fails.
func (r *Redis) maintain() {
	defer r.wg.Done()
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		select {
		case <-r.wake:
		case <-retry:
		case <-r.quit:
			return
		}
		retry = nil
		if r.resubscribe() {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		retry = time.After(backoff)
	}
}

// resubscribe makes one attempt to subscribe every orphan again and
// reports whether none is left.
func (r *Redis) resubscribe() bool {
	r.mu.Lock()
	reroute := r.reroute && r.cluster != nil
	r.reroute = false
	var orphans int
	for _, s := range r.subs {
		if s.conn == nil {
			orphans++
		}
	}
	r.mu.Unlock()
	if orphans == 0 {
		r.pruneConns()
		return true
	}
	if reroute {
		if err := r.refreshSlots(); err != nil {
			r.mu.Lock()
			r.reroute = true
			r.mu.Unlock()
			return false
		}
	}

	// Start (or find) the connections the orphans go to and let them dial,
	// in parallel and without holding any stripe.
	r.mu.Lock()
	targets := make(map[string]*subConn)
	for _, s := range r.subs {
		if s.conn != nil {
			continue
		}
		if addr, ok := r.route(s.slot); ok && targets[addr] == nil {
			if c := r.connTo(addr); c != nil {
				targets[addr] = c
			}
		}
	}
	r.mu.Unlock()
	ok := true
	wait, cancelWait := context.WithTimeout(context.Background(), readyWait)
	for _, c := range targets {
		if r.waitReady(wait, c) != nil {
			ok = false
		}
	}
	cancelWait()
	ctx, cancel := context.WithTimeout(context.Background(), r.connectTimeout)
	defer cancel()

	// Subscribe the orphans whose connection is up: one command per
	// connection on a single server, one per slot in a cluster.
	for i := range r.stripes {
		r.stripes[i].Lock()
	}
	defer func() {
		for i := range r.stripes {
			r.stripes[i].Unlock()
		}
	}()
	type group struct {
		c     *subConn
		names []string
	}
	groups := make(map[[2]any]*group)
	r.mu.Lock()
	for _, s := range r.subs {
		if s.conn != nil {
			continue
		}
		addr, routed := r.route(s.slot)
		c := targets[addr]
		if !routed || c == nil || c.dead || !isReady(c) {
			ok = false
			continue
		}
		k := [2]any{c, s.slot}
		g := groups[k]
		if g == nil {
			g = &group{c: c}
			groups[k] = g
		}
		g.names = append(g.names, s.name)
		s.conn = c
		c.pending[s.name] = append(c.pending[s.name], s)
	}
	r.mu.Unlock()
	for _, g := range groups {
		if err := r.send(ctx, g.c, false, g.names...); err != nil {
			r.drop(g.c, err)
			ok = false
		}
	}
	if !ok {
		r.mu.Lock()
		r.reroute = true
		r.mu.Unlock()
	}
	return ok
}

// refreshSlots reads the slot owners again, asking the masters in turn
// (go-redis sends each keyless command to the next one) until one
// answers.
func (r *Redis) refreshSlots() error {
	var err error
	r.mu.Lock()
	tries := max(len(r.conns), 3) + 1
	r.mu.Unlock()
	for range tries {
		ctx, cancel := context.WithTimeout(context.Background(), slotsTimeout)
		var slots []slotRange
		slots, err = readSlots(ctx, r.cluster)
		cancel()
		if err == nil {
			r.mu.Lock()
			r.slots = slots
			r.mu.Unlock()
			r.cluster.ReloadState(context.Background())
			return nil
		}
		select {
		case <-r.quit:
			return ErrClosed
		default:
		}
	}
	return err
}

// pruneConns drops subscription connections no channel uses any more to
// nodes that own no slot (a master that became a replica).
func (r *Redis) pruneConns() {
	if r.cluster == nil {
		return
	}
	r.mu.Lock()
	used := make(map[*subConn]bool)
	for _, s := range r.subs {
		if s.conn != nil {
			used[s.conn] = true
		}
	}
	owners := make(map[string]bool)
	for _, sr := range r.slots {
		owners[sr.addr] = true
	}
	var idle []*subConn
	for addr, c := range r.conns {
		if !used[c] && !owners[addr] {
			idle = append(idle, c)
		}
	}
	r.mu.Unlock()
	for _, c := range idle {
		r.drop(c, nil)
	}
}
