package broker

import (
	"context"
	"sync"
	"time"
)

// Memory is the in-process broker of the embedded mode. Delivery never
// loses a message: each Memory queues deliveries without bound and hands
// them to its handler from one goroutine, so Publish never blocks on a
// slow handler (nor calls it while the publisher holds locks).
//
// Replica returns another Memory over the same state, which behaves as a
// second replica of one deployment: it sees the same pub/sub channels,
// claims, presence and counters but has its own handler and
// subscriptions. Resubscribed is never called, since nothing is lost.
type Memory struct {
	hub *memHub

	// mu guards the fields below.
	mu      sync.Mutex
	handler Handler
	queue   []memDelivery
	closed  bool
	started bool

	wake chan struct{} // signals the delivery goroutine; capacity 1
	done chan struct{} // closed when the delivery goroutine exits
}

var _ Broker = (*Memory)(nil)

type memDelivery struct {
	channel string
	payload []byte
}

// memHub is the state that the replicas of one in-process deployment share.
type memHub struct {
	ttl time.Duration
	now func() time.Time

	// mu guards the maps below and the order of deliveries: a publish
	// enqueues to every subscriber under mu, so every subscriber sees
	// publishes in one order.
	mu        sync.Mutex
	subs      map[string]map[*Memory]struct{}
	claims    map[string]time.Time // key -> expiry; zero means never
	presence  map[int64]map[string]time.Time
	hits      map[string]memBucket
	lastSweep time.Time
}

type memBucket struct {
	index int64
	end   time.Time // when the window is over and the bucket can go
	count int64
}

// sweepEvery bounds how long expired claims, counters and presence
// entries stay in memory.
const sweepEvery = time.Minute

// NewMemory returns an in-process broker.
func NewMemory(opts Options) *Memory {
	opts = opts.withDefaults()
	hub := &memHub{
		ttl:      opts.PresenceTTL,
		now:      opts.Now,
		subs:     make(map[string]map[*Memory]struct{}),
		claims:   make(map[string]time.Time),
		presence: make(map[int64]map[string]time.Time),
		hits:     make(map[string]memBucket),
	}
	hub.lastSweep = hub.now()
	return newMemoryView(hub)
}

func newMemoryView(hub *memHub) *Memory {
	return &Memory{
		hub:  hub,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

// Replica returns a second broker over the same in-process state, as if it
// ran in another replica. Closing one view does not close the others.
func (m *Memory) Replica() *Memory {
	return newMemoryView(m.hub)
}

// Start sets the handler and starts the delivery goroutine, which lives
// until Close.
func (m *Memory) Start(h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return
	}
	m.handler = h
	m.started = true
	go m.deliver()
}

// deliver hands queued messages to the handler until Close.
func (m *Memory) deliver() {
	defer close(m.done)
	for {
		m.mu.Lock()
		batch, closed, h := m.queue, m.closed, m.handler
		m.queue = nil
		m.mu.Unlock()
		if closed {
			return
		}
		for _, d := range batch {
			// Unsubscribe stops delivery even of messages already queued.
			if m.subscribed(d.channel) {
				h.Receive(d.channel, d.payload)
			}
		}
		if len(batch) == 0 {
			<-m.wake
		}
	}
}

func (m *Memory) subscribed(channel string) bool {
	m.hub.mu.Lock()
	defer m.hub.mu.Unlock()
	_, ok := m.hub.subs[channel][m]
	return ok
}

func (m *Memory) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// Publish queues payload for every view subscribed to channel.
func (m *Memory) Publish(ctx context.Context, channel string, payload []byte) error {
	if m.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := append([]byte(nil), payload...)
	m.hub.mu.Lock()
	defer m.hub.mu.Unlock()
	for v := range m.hub.subs[channel] {
		v.enqueue(memDelivery{channel: channel, payload: p})
	}
	return nil
}

// PublishMany queues every publication under one lock, so no other
// publish interleaves with the batch.
func (m *Memory) PublishMany(ctx context.Context, pubs []Publication) error {
	if m.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.hub.mu.Lock()
	defer m.hub.mu.Unlock()
	for _, pub := range pubs {
		views := m.hub.subs[pub.Channel]
		if len(views) == 0 {
			continue
		}
		p := append([]byte(nil), pub.Payload...)
		for v := range views {
			v.enqueue(memDelivery{channel: pub.Channel, payload: p})
		}
	}
	return nil
}

// enqueue is called with hub.mu held.
func (m *Memory) enqueue(d memDelivery) {
	m.mu.Lock()
	if !m.closed {
		m.queue = append(m.queue, d)
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Subscribe takes effect at once: the next Publish reaches this view.
func (m *Memory) Subscribe(ctx context.Context, channel string) error {
	m.mu.Lock()
	closed, started := m.closed, m.started
	m.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !started:
		return errNotStarted
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.hub.mu.Lock()
	defer m.hub.mu.Unlock()
	views := m.hub.subs[channel]
	if views == nil {
		views = make(map[*Memory]struct{})
		m.hub.subs[channel] = views
	}
	views[m] = struct{}{}
	return nil
}

// Unsubscribe stops delivery, including of messages already queued.
func (m *Memory) Unsubscribe(ctx context.Context, channel string) error {
	if m.isClosed() {
		return ErrClosed
	}
	m.hub.mu.Lock()
	defer m.hub.mu.Unlock()
	m.hub.unsubscribe(m, channel)
	return nil
}

// unsubscribe is called with hub.mu held.
func (h *memHub) unsubscribe(m *Memory, channel string) {
	views := h.subs[channel]
	delete(views, m)
	if len(views) == 0 {
		delete(h.subs, channel)
	}
}

// Claim sets key when absent or expired; ttl <= 0 means it never expires.
func (m *Memory) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if m.isClosed() {
		return false, ErrClosed
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	h.maybeSweep(now)
	return h.claim(key, ttl, now), nil
}

// ClaimMany claims every key under one lock.
func (m *Memory) ClaimMany(ctx context.Context, keys []string, ttl time.Duration) ([]bool, error) {
	out := make([]bool, len(keys))
	if m.isClosed() {
		return out, ErrClosed
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	h.maybeSweep(now)
	for i, key := range keys {
		out[i] = h.claim(key, ttl, now)
	}
	return out, nil
}

// claim is called with mu held.
func (h *memHub) claim(key string, ttl time.Duration, now time.Time) bool {
	if exp, ok := h.claims[key]; ok && (exp.IsZero() || now.Before(exp)) {
		return false
	}
	var exp time.Time
	if ttl > 0 {
		exp = now.Add(ttl)
	}
	h.claims[key] = exp
	return true
}

// livePresence drops userID's expired entries and returns how many were
// dropped; called with mu held.
func (h *memHub) livePresence(userID int64, now time.Time) (map[string]time.Time, int) {
	entries := h.presence[userID]
	dropped := 0
	for r, exp := range entries {
		if !now.Before(exp) {
			delete(entries, r)
			dropped++
		}
	}
	return entries, dropped
}

// PresenceJoin records replica's entry for userID.
func (m *Memory) PresenceJoin(ctx context.Context, replica string, userID int64) (bool, error) {
	if m.isClosed() {
		return false, ErrClosed
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	h.maybeSweep(now)
	entries, _ := h.livePresence(userID, now)
	first := len(entries) == 0
	if entries == nil {
		entries = make(map[string]time.Time)
		h.presence[userID] = entries
	}
	entries[replica] = now.Add(h.ttl)
	return first, nil
}

// PresenceLeave removes replica's entry for userID.
func (m *Memory) PresenceLeave(ctx context.Context, replica string, userID int64) (bool, error) {
	if m.isClosed() {
		return false, ErrClosed
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	entries, dropped := h.livePresence(userID, now)
	if _, ok := entries[replica]; ok {
		delete(entries, replica)
		dropped++
	}
	if len(entries) > 0 {
		return false, nil
	}
	delete(h.presence, userID)
	return dropped > 0, nil
}

// PresenceRefresh extends replica's entries for userIDs by the TTL.
func (m *Memory) PresenceRefresh(ctx context.Context, replica string, userIDs []int64) error {
	if m.isClosed() {
		return ErrClosed
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	h.maybeSweep(now)
	for _, id := range userIDs {
		entries := h.presence[id]
		if entries == nil {
			entries = make(map[string]time.Time)
			h.presence[id] = entries
		}
		entries[replica] = now.Add(h.ttl)
	}
	return nil
}

// Online returns the users of userIDs with a live entry.
func (m *Memory) Online(ctx context.Context, userIDs []int64) ([]int64, error) {
	if m.isClosed() {
		return nil, ErrClosed
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	var online []int64
	for _, id := range userIDs {
		for _, exp := range h.presence[id] {
			if now.Before(exp) {
				online = append(online, id)
				break
			}
		}
	}
	return online, nil
}

// Hit counts an event for key in the current window.
func (m *Memory) Hit(ctx context.Context, key string, window time.Duration) (int64, error) {
	if m.isClosed() {
		return 0, ErrClosed
	}
	if window < time.Millisecond {
		return 0, errBadWindow
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	h.maybeSweep(now)
	idx := windowIndex(now, window)
	b := h.hits[key]
	if b.index != idx {
		b = memBucket{index: idx, end: time.UnixMilli((idx + 1) * window.Milliseconds())}
	}
	b.count++
	h.hits[key] = b
	return b.count, nil
}

// Hits implements Broker.
func (m *Memory) Hits(ctx context.Context, key string, window time.Duration) (int64, error) {
	if m.isClosed() {
		return 0, ErrClosed
	}
	if window < time.Millisecond {
		return 0, errBadWindow
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.hits[key]
	if b.index != windowIndex(h.now(), window) {
		return 0, nil
	}
	return b.count, nil
}

// maybeSweep drops expired state at most once per sweepEvery, so memory
// stays bounded by what is live; called with mu held.
func (h *memHub) maybeSweep(now time.Time) {
	if now.Sub(h.lastSweep) < sweepEvery {
		return
	}
	h.lastSweep = now
	for k, exp := range h.claims {
		if !exp.IsZero() && !now.Before(exp) {
			delete(h.claims, k)
		}
	}
	for k, b := range h.hits {
		if !now.Before(b.end) {
			delete(h.hits, k)
		}
	}
	for id := range h.presence {
		if entries, _ := h.livePresence(id, now); len(entries) == 0 {
			delete(h.presence, id)
		}
	}
}

// Ping always succeeds on an open broker.
func (m *Memory) Ping(ctx context.Context) error {
	if m.isClosed() {
		return ErrClosed
	}
	return nil
}

// Close drops this view's subscriptions and queued deliveries and waits
// for its delivery goroutine to exit. It must not be called from the
// handler. Other views of the same state keep working.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.queue = nil
	started := m.started
	m.mu.Unlock()

	m.hub.mu.Lock()
	for channel, views := range m.hub.subs {
		if _, ok := views[m]; ok {
			m.hub.unsubscribe(m, channel)
		}
	}
	m.hub.mu.Unlock()

	if started {
		select {
		case m.wake <- struct{}{}:
		default:
		}
		<-m.done
	}
	return nil
}
