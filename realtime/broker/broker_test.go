package broker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/windi-chat/windi/realtime/broker"
)

// newBrokerFunc returns a broker for t. Brokers returned for the same t
// are replicas of one deployment: they share channels, keys and presence.
type newBrokerFunc func(t *testing.T, opts broker.Options) broker.Broker

func TestMemory(t *testing.T) {
	var mu sync.Mutex
	first := make(map[*testing.T]*broker.Memory)
	runConformance(t, func(t *testing.T, opts broker.Options) broker.Broker {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		var b *broker.Memory
		if m, ok := first[t]; ok {
			b = m.Replica()
		} else {
			b = broker.NewMemory(opts)
			first[t] = b
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

// TestMemoryClock drives the memory broker's expiries with Options.Now.
func TestMemoryClock(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	b := broker.NewMemory(broker.Options{Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}})
	t.Cleanup(func() { _ = b.Close() })

	if first, _ := b.PresenceJoin(ctx, "r1", 1); !first {
		t.Fatal("join: got first=false, want true")
	}
	if ok, _ := b.Claim(ctx, "k", 10*time.Second); !ok {
		t.Fatal("Claim: got false, want true")
	}
	if n, _ := b.Hit(ctx, "h", time.Minute); n != 1 {
		t.Fatalf("Hit: got %d, want 1", n)
	}
	advance(44 * time.Second) // default TTL is 45s
	if online, _ := b.Online(ctx, []int64{1}); len(online) != 1 {
		t.Errorf("Online before TTL: got %v, want [1]", online)
	}
	if ok, _ := b.Claim(ctx, "k", 10*time.Second); !ok {
		t.Error("Claim after ttl: got false, want true")
	}
	advance(2 * time.Second)
	if online, _ := b.Online(ctx, []int64{1}); len(online) != 0 {
		t.Errorf("Online after TTL: got %v, want none", online)
	}
	// Past the sweep interval, expired state is dropped and counting
	// starts over.
	advance(2 * time.Minute)
	if n, _ := b.Hit(ctx, "h", time.Minute); n != 1 {
		t.Errorf("Hit in a later window: got %d, want 1", n)
	}
	if first, _ := b.PresenceJoin(ctx, "r2", 1); !first {
		t.Error("join after sweep: got first=false, want true")
	}
}

func redisURL() string {
	if u := os.Getenv("WINDI_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// redisAdmin returns a plain client to the test Redis, skipping the test
// (or failing it on CI) when Redis is unreachable.
func redisAdmin(t *testing.T) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(redisURL())
	if err != nil {
		t.Fatalf("parse WINDI_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis unreachable: %v", err)
		}
		t.Skipf("redis unreachable: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func randomPrefix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "windi-test-" + hex.EncodeToString(b[:]) + ":"
}

// withClientName adds client_name to a redis:// URL so the test can find
// its broker's connections in CLIENT LIST.
func withClientName(url, name string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "client_name=" + name
}

// cleanPrefix deletes every key under prefix.
func cleanPrefix(t *testing.T, admin *redis.Client, prefix string) {
	t.Helper()
	ctx := context.Background()
	iter := admin.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan %s*: %v", prefix, err)
		return
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := admin.Del(ctx, keys[:n]...).Err(); err != nil {
			t.Errorf("del: %v", err)
		}
		keys = keys[n:]
	}
}

// redisPrefix returns the prefix of t's deployment, made on first use;
// the prefix doubles as the connections' client name.
type redisPrefixes struct {
	mu sync.Mutex
	m  map[*testing.T]string
}

func (p *redisPrefixes) get(t *testing.T, admin *redis.Client) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if prefix, ok := p.m[t]; ok {
		return prefix
	}
	prefix := randomPrefix(t)
	p.m[t] = prefix
	t.Cleanup(func() { cleanPrefix(t, admin, prefix) })
	return prefix
}

func newRedisBroker(t *testing.T, admin *redis.Client, prefix string, opts broker.Options) *broker.Redis {
	t.Helper()
	opts.Prefix = prefix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := broker.NewRedis(ctx, withClientName(redisURL(), strings.TrimSuffix(prefix, ":")), opts)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestRedis(t *testing.T) {
	admin := redisAdmin(t)
	prefixes := &redisPrefixes{m: make(map[*testing.T]string)}
	runConformance(t, func(t *testing.T, opts broker.Options) broker.Broker {
		t.Helper()
		return newRedisBroker(t, admin, prefixes.get(t, admin), opts)
	})
}

func TestRedisBadURL(t *testing.T) {
	ctx := context.Background()
	if _, err := broker.NewRedis(ctx, "http://nope", broker.Options{}); err == nil {
		t.Error("NewRedis(http://nope): got nil error, want one")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// Port 1 on loopback refuses connections.
	if _, err := broker.NewRedis(ctx, "redis://127.0.0.1:1/0", broker.Options{}); err == nil {
		t.Error("NewRedis(unreachable): got nil error, want one")
	}
}

// TestRedisReconnect drops the broker's pubsub connection from the server
// side and checks that the broker reports the re-subscription and keeps
// delivering.
func TestRedisReconnect(t *testing.T) {
	admin := redisAdmin(t)
	prefix := randomPrefix(t)
	t.Cleanup(func() { cleanPrefix(t, admin, prefix) })
	b := newRedisBroker(t, admin, prefix, broker.Options{})
	h := newRecorder()
	b.Start(h)
	ctx := context.Background()
	channels := []string{"chat:1", "chat:2", "chat:3"}
	for _, c := range channels {
		mustSubscribe(t, b, c)
	}
	mustPublish(t, b, "chat:1", "before")
	h.waitFor(t, "chat:1", 1)

	name := strings.TrimSuffix(prefix, ":")
	killed := killPubSub(t, admin, name)
	if killed == 0 {
		t.Fatalf("no pubsub connection named %s found", name)
	}

	got := h.waitResubscribed(t, 5*time.Second)
	slices.Sort(got)
	if !slices.Equal(got, channels) {
		t.Errorf("Resubscribed: got %v, want %v", got, channels)
	}
	for _, c := range channels {
		if err := b.Publish(ctx, c, []byte("after")); err != nil {
			t.Fatalf("Publish %s after reconnect: %v", c, err)
		}
	}
	h.waitFor(t, "chat:1", 2)
	h.waitFor(t, "chat:2", 1)
	h.waitFor(t, "chat:3", 1)
	if n := h.resubscribedCalls(); n != 1 {
		t.Errorf("Resubscribed calls: got %d, want 1 for one reconnect", n)
	}

	// A channel subscribed after the reconnect works too.
	mustSubscribe(t, b, "chat:4")
	mustPublish(t, b, "chat:4", "x")
	h.waitFor(t, "chat:4", 1)
}

// killPubSub kills the pubsub connections whose client name is name and
// returns how many it killed.
func killPubSub(t *testing.T, admin *redis.Client, name string) int {
	t.Helper()
	ctx := context.Background()
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	killed := 0
	for line := range strings.SplitSeq(list, "\n") {
		fields := make(map[string]string)
		for f := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		// A connection in pubsub mode has at least one subscription.
		if fields["name"] != name || (fields["sub"] == "0" && fields["psub"] == "0") {
			continue
		}
		id, err := strconv.ParseInt(fields["id"], 10, 64)
		if err != nil {
			t.Fatalf("CLIENT LIST id %q: %v", fields["id"], err)
		}
		if err := admin.ClientKillByFilter(ctx, "ID", strconv.FormatInt(id, 10)).Err(); err != nil {
			t.Fatalf("CLIENT KILL ID %d: %v", id, err)
		}
		killed++
	}
	return killed
}

// recorder is a Handler that keeps what it receives. It fails the test
// through its checks if calls ever overlap.
type recorder struct {
	inFlight atomic.Int32
	overlap  atomic.Bool

	mu       sync.Mutex
	received map[string][]string
	resubs   [][]string
	changed  chan struct{} // closed and replaced on every call
}

func newRecorder() *recorder {
	return &recorder{received: make(map[string][]string), changed: make(chan struct{})}
}

func (r *recorder) enter() {
	if r.inFlight.Add(1) != 1 {
		r.overlap.Store(true)
	}
}

func (r *recorder) leave() {
	r.inFlight.Add(-1)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) Receive(channel string, payload []byte) {
	r.enter()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received[channel] = append(r.received[channel], string(payload))
	r.leave()
}

func (r *recorder) Resubscribed(channels []string) {
	r.enter()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resubs = append(r.resubs, slices.Clone(channels))
	r.leave()
}

// got returns what channel received so far.
func (r *recorder) got(channel string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.received[channel])
}

func (r *recorder) resubscribedCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.resubs)
}

// waitUntil waits up to timeout for cond, evaluated under mu.
func (r *recorder) waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := cond()
		changed := r.changed
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

// waitFor waits until channel received n messages.
func (r *recorder) waitFor(t *testing.T, channel string, n int) []string {
	t.Helper()
	if !r.waitUntil(5*time.Second, func() bool { return len(r.received[channel]) >= n }) {
		t.Fatalf("channel %s: got %d messages, want %d", channel, len(r.got(channel)), n)
	}
	if r.overlap.Load() {
		t.Error("handler calls overlapped, want one goroutine")
	}
	return r.got(channel)
}

// waitResubscribed waits for the first Resubscribed call and then a little
// longer, so a split report would show, and returns all reported channels.
func (r *recorder) waitResubscribed(t *testing.T, timeout time.Duration) []string {
	t.Helper()
	if !r.waitUntil(timeout, func() bool { return len(r.resubs) > 0 }) {
		t.Fatalf("Resubscribed not called within %v", timeout)
	}
	time.Sleep(200 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []string
	for _, c := range r.resubs {
		all = append(all, c...)
	}
	return all
}

func mustSubscribe(t *testing.T, b broker.Broker, channel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Subscribe(ctx, channel); err != nil {
		t.Fatalf("Subscribe(%s): %v", channel, err)
	}
}

func mustPublish(t *testing.T, b broker.Broker, channel, payload string) {
	t.Helper()
	if err := b.Publish(context.Background(), channel, []byte(payload)); err != nil {
		t.Fatalf("Publish(%s): %v", channel, err)
	}
}

// runConformance is the suite every Broker implementation passes.
func runConformance(t *testing.T, newBroker newBrokerFunc) {
	ctx := context.Background()

	t.Run("PublishOrder", func(t *testing.T) {
		sub := newBroker(t, broker.Options{})
		pub := newBroker(t, broker.Options{})
		h := newRecorder()
		sub.Start(h)
		pub.Start(newRecorder())
		mustSubscribe(t, sub, "chat:1")
		const n = 1000
		want := make([]string, n)
		for i := range n {
			want[i] = strconv.Itoa(i)
			mustPublish(t, pub, "chat:1", want[i])
		}
		if got := h.waitFor(t, "chat:1", n); !slices.Equal(got, want) {
			t.Errorf("received out of order or changed: got %v…, want 0..%d", got[:min(len(got), 10)], n-1)
		}
		time.Sleep(50 * time.Millisecond)
		if got := len(h.got("chat:1")); got != n {
			t.Errorf("received %d messages, want %d (at most once)", got, n)
		}
	})

	t.Run("OnlySubscribed", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		h := newRecorder()
		b.Start(h)
		mustSubscribe(t, b, "a")
		mustSubscribe(t, b, "a") // a no-op
		mustPublish(t, b, "b", "not subscribed")
		mustPublish(t, b, "a", "1")
		h.waitFor(t, "a", 1)
		if err := b.Unsubscribe(ctx, "a"); err != nil {
			t.Fatalf("Unsubscribe: %v", err)
		}
		if err := b.Unsubscribe(ctx, "a"); err != nil {
			t.Fatalf("Unsubscribe twice: %v", err)
		}
		mustPublish(t, b, "a", "after unsubscribe")
		// A fence: once the fence arrives, anything published before it
		// would have arrived too.
		mustSubscribe(t, b, "fence")
		mustPublish(t, b, "fence", "x")
		h.waitFor(t, "fence", 1)
		if got := h.got("a"); !slices.Equal(got, []string{"1"}) {
			t.Errorf("channel a: got %v, want [1]", got)
		}
		if got := h.got("b"); len(got) != 0 {
			t.Errorf("channel b: got %v, want nothing", got)
		}
		if got := h.resubscribedCalls(); got != 0 {
			t.Errorf("Resubscribed calls: got %d, want 0", got)
		}
	})

	t.Run("SubscribeConfirmed", func(t *testing.T) {
		sub := newBroker(t, broker.Options{})
		pub := newBroker(t, broker.Options{})
		h := newRecorder()
		sub.Start(h)
		pub.Start(newRecorder())
		// Publish from another replica right after Subscribe returns, many
		// times: each must arrive.
		for i := range 50 {
			c := fmt.Sprintf("chat:%d", i)
			mustSubscribe(t, sub, c)
			mustPublish(t, pub, c, "x")
		}
		for i := range 50 {
			h.waitFor(t, fmt.Sprintf("chat:%d", i), 1)
		}
	})

	t.Run("ConcurrentSubscribe", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		h := newRecorder()
		b.Start(h)
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				// Half the goroutines share a channel, half have their own.
				c := "shared"
				if i%2 == 1 {
					c = fmt.Sprintf("own:%d", i)
				}
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if err := b.Subscribe(ctx, c); err != nil {
					t.Errorf("Subscribe(%s): %v", c, err)
				}
			})
		}
		wg.Wait()
		mustPublish(t, b, "shared", "x")
		mustPublish(t, b, "own:19", "y")
		h.waitFor(t, "shared", 1)
		h.waitFor(t, "own:19", 1)
		time.Sleep(50 * time.Millisecond)
		if got := h.got("shared"); len(got) != 1 {
			t.Errorf("shared: got %v, want one message", got)
		}
	})

	t.Run("SubscribeCanceled", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		h := newRecorder()
		b.Start(h)
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		if err := b.Subscribe(canceled, "c"); err == nil {
			t.Fatal("Subscribe with canceled ctx: got nil error, want one")
		}
		mustPublish(t, b, "c", "lost")
		mustSubscribe(t, b, "c")
		mustPublish(t, b, "c", "kept")
		h.waitFor(t, "c", 1)
		time.Sleep(50 * time.Millisecond)
		if got := h.got("c"); !slices.Equal(got, []string{"kept"}) {
			t.Errorf("got %v, want [kept]", got)
		}
	})

	t.Run("TwoReplicas", func(t *testing.T) {
		b1 := newBroker(t, broker.Options{})
		b2 := newBroker(t, broker.Options{})
		h1, h2 := newRecorder(), newRecorder()
		b1.Start(h1)
		b2.Start(h2)
		mustSubscribe(t, b1, "chat:7")
		mustSubscribe(t, b2, "chat:7")
		mustPublish(t, b1, "chat:7", "from 1")
		mustPublish(t, b2, "chat:7", "from 2")
		for _, h := range []*recorder{h1, h2} {
			got := h.waitFor(t, "chat:7", 2)
			slices.Sort(got)
			if !slices.Equal(got, []string{"from 1", "from 2"}) {
				t.Errorf("got %v, want both messages", got)
			}
		}
	})

	t.Run("SubscribeBeforeStart", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		if err := b.Subscribe(ctx, "x"); err == nil {
			t.Error("Subscribe before Start: got nil error, want one")
		}
	})

	t.Run("Claim", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		ok, err := b.Claim(ctx, "dedup:1:2:abc", time.Minute)
		if err != nil || !ok {
			t.Fatalf("first Claim: got %v, %v, want true", ok, err)
		}
		ok, err = b.Claim(ctx, "dedup:1:2:abc", time.Minute)
		if err != nil || ok {
			t.Fatalf("second Claim: got %v, %v, want false", ok, err)
		}
		other := newBroker(t, broker.Options{})
		ok, err = other.Claim(ctx, "dedup:1:2:abc", time.Minute)
		if err != nil || ok {
			t.Fatalf("Claim on another replica: got %v, %v, want false", ok, err)
		}
	})

	t.Run("ClaimConcurrent", func(t *testing.T) {
		brokers := []broker.Broker{newBroker(t, broker.Options{}), newBroker(t, broker.Options{})}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				ok, err := brokers[i%2].Claim(ctx, "race", time.Minute)
				if err != nil {
					t.Errorf("Claim: %v", err)
				}
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Errorf("concurrent claims won: got %d, want 1", got)
		}
	})

	t.Run("ClaimExpires", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		if ok, err := b.Claim(ctx, "short", 150*time.Millisecond); err != nil || !ok {
			t.Fatalf("Claim: got %v, %v, want true", ok, err)
		}
		time.Sleep(300 * time.Millisecond)
		if ok, err := b.Claim(ctx, "short", time.Minute); err != nil || !ok {
			t.Fatalf("Claim after ttl: got %v, %v, want true", ok, err)
		}
	})

	t.Run("Presence", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		steps := []struct {
			op      string
			replica string
			want    bool
		}{
			{"join", "r1", true},
			{"join", "r1", false}, // the same replica again
			{"join", "r2", false},
			{"leave", "r1", false},
			{"leave", "r2", true},
			{"leave", "r2", false}, // already gone
			{"join", "r2", true},
		}
		for i, s := range steps {
			var got bool
			var err error
			if s.op == "join" {
				got, err = b.PresenceJoin(ctx, s.replica, 42)
			} else {
				got, err = b.PresenceLeave(ctx, s.replica, 42)
			}
			if err != nil {
				t.Fatalf("step %d %s %s: %v", i, s.op, s.replica, err)
			}
			if got != s.want {
				t.Errorf("step %d %s %s: got %v, want %v", i, s.op, s.replica, got, s.want)
			}
		}
	})

	t.Run("PresenceConcurrent", func(t *testing.T) {
		brokers := []broker.Broker{newBroker(t, broker.Options{}), newBroker(t, broker.Options{})}
		const n = 20
		for round := range 3 {
			var firsts, lasts atomic.Int32
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					first, err := brokers[i%2].PresenceJoin(ctx, fmt.Sprintf("r%d", i), 7)
					if err != nil {
						t.Errorf("PresenceJoin: %v", err)
					}
					if first {
						firsts.Add(1)
					}
				})
			}
			wg.Wait()
			if got := firsts.Load(); got != 1 {
				t.Errorf("round %d: first=true from %d joins, want 1", round, got)
			}
			online, err := brokers[0].Online(ctx, []int64{7})
			if err != nil || !slices.Equal(online, []int64{7}) {
				t.Errorf("round %d: Online: got %v, %v, want [7]", round, online, err)
			}
			for i := range n {
				wg.Go(func() {
					last, err := brokers[i%2].PresenceLeave(ctx, fmt.Sprintf("r%d", i), 7)
					if err != nil {
						t.Errorf("PresenceLeave: %v", err)
					}
					if last {
						lasts.Add(1)
					}
				})
			}
			wg.Wait()
			if got := lasts.Load(); got != 1 {
				t.Errorf("round %d: last=true from %d leaves, want 1", round, got)
			}
			online, err = brokers[0].Online(ctx, []int64{7})
			if err != nil || len(online) != 0 {
				t.Errorf("round %d: Online after leaves: got %v, %v, want none", round, online, err)
			}
		}
	})

	t.Run("PresenceTTL", func(t *testing.T) {
		const ttl = time.Second
		b := newBroker(t, broker.Options{PresenceTTL: ttl})
		for _, id := range []int64{1, 2, 3} {
			if _, err := b.PresenceJoin(ctx, "r1", id); err != nil {
				t.Fatalf("PresenceJoin: %v", err)
			}
		}
		if _, err := b.PresenceJoin(ctx, "r2", 3); err != nil {
			t.Fatalf("PresenceJoin: %v", err)
		}
		online, err := b.Online(ctx, []int64{1, 2, 3, 4})
		slices.Sort(online)
		if err != nil || !slices.Equal(online, []int64{1, 2, 3}) {
			t.Fatalf("Online: got %v, %v, want [1 2 3]", online, err)
		}
		time.Sleep(ttl * 6 / 10)
		// r1 keeps user 1 alive; r2 (user 3's second entry) and users 2
		// and 3 on r1 lapse.
		if err := b.PresenceRefresh(ctx, "r1", []int64{1}); err != nil {
			t.Fatalf("PresenceRefresh: %v", err)
		}
		time.Sleep(ttl * 6 / 10)
		online, err = b.Online(ctx, []int64{1, 2, 3, 4})
		if err != nil || !slices.Equal(online, []int64{1}) {
			t.Fatalf("Online after ttl: got %v, %v, want [1]", online, err)
		}
		// A lapsed user's next join is first again.
		if first, err := b.PresenceJoin(ctx, "r2", 2); err != nil || !first {
			t.Errorf("join after lapse: got %v, %v, want true", first, err)
		}
		// A leave that finds only lapsed entries still reports the user
		// going offline, once.
		if last, err := b.PresenceLeave(ctx, "r1", 3); err != nil || !last {
			t.Errorf("leave of lapsed user: got %v, %v, want true", last, err)
		}
		if last, err := b.PresenceLeave(ctx, "r2", 3); err != nil || last {
			t.Errorf("second leave of lapsed user: got %v, %v, want false", last, err)
		}
		if err := b.PresenceRefresh(ctx, "r1", nil); err != nil {
			t.Errorf("PresenceRefresh(nil): %v", err)
		}
		if online, err := b.Online(ctx, nil); err != nil || len(online) != 0 {
			t.Errorf("Online(nil): got %v, %v, want none", online, err)
		}
	})

	t.Run("Hit", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		other := newBroker(t, broker.Options{})
		const window = 500 * time.Millisecond
		// Start just after a window begins so the hits share one window.
		time.Sleep(window - time.Duration(time.Now().UnixMilli()%window.Milliseconds())*time.Millisecond + 20*time.Millisecond)
		for i := range 5 {
			got, err := []broker.Broker{b, other}[i%2].Hit(ctx, "login:a@b.c", window)
			if err != nil {
				t.Fatalf("Hit: %v", err)
			}
			if got != int64(i+1) {
				t.Errorf("hit %d: got %d, want %d", i+1, got, i+1)
			}
		}
		if got, err := b.Hit(ctx, "login:other", window); err != nil || got != 1 {
			t.Errorf("other key: got %d, %v, want 1", got, err)
		}
		// Hits reads the count without counting, on any replica.
		for range 2 {
			if got, err := other.Hits(ctx, "login:a@b.c", window); err != nil || got != 5 {
				t.Errorf("Hits: got %d, %v, want 5", got, err)
			}
		}
		if got, err := b.Hits(ctx, "login:never", window); err != nil || got != 0 {
			t.Errorf("Hits of an unused key: got %d, %v, want 0", got, err)
		}
		time.Sleep(window)
		if got, err := b.Hits(ctx, "login:a@b.c", window); err != nil || got != 0 {
			t.Errorf("Hits in the next window: got %d, %v, want 0", got, err)
		}
		if got, err := b.Hit(ctx, "login:a@b.c", window); err != nil || got != 1 {
			t.Errorf("next window: got %d, %v, want 1", got, err)
		}
		if _, err := b.Hit(ctx, "x", 0); err == nil {
			t.Error("Hit with zero window: got nil error, want one")
		}
	})

	t.Run("PublishMany", func(t *testing.T) {
		sub := newBroker(t, broker.Options{})
		pub := newBroker(t, broker.Options{})
		h := newRecorder()
		sub.Start(h)
		pub.Start(newRecorder())
		// Channels that land on different shards of a cluster.
		channels := []string{"chat:1", "chat:2", "chat:3", "user:4", "session:5", "chat:6"}
		for _, c := range channels {
			mustSubscribe(t, sub, c)
		}
		if err := pub.PublishMany(ctx, nil); err != nil {
			t.Fatalf("PublishMany(nil): %v", err)
		}
		// One message to each channel first, with Publish, then batches:
		// each channel's messages arrive in order, after the single one.
		want := make(map[string][]string)
		for _, c := range channels {
			mustPublish(t, pub, c, c+"/single")
			want[c] = append(want[c], c+"/single")
		}
		for batch := range 5 {
			var pubs []broker.Publication
			for i := range 60 {
				c := channels[(i*7+batch)%len(channels)]
				p := fmt.Sprintf("%s/%d/%d", c, batch, i)
				pubs = append(pubs, broker.Publication{Channel: c, Payload: []byte(p)})
				want[c] = append(want[c], p)
			}
			// Not subscribed: goes nowhere.
			pubs = append(pubs, broker.Publication{Channel: "nobody", Payload: []byte("x")})
			if err := pub.PublishMany(ctx, pubs); err != nil {
				t.Fatalf("PublishMany: %v", err)
			}
			// The slice is the caller's again: changing it changes nothing.
			for i := range pubs {
				pubs[i].Payload[0] = '!'
			}
		}
		for _, c := range channels {
			if got := h.waitFor(t, c, len(want[c])); !slices.Equal(got, want[c]) {
				t.Errorf("%s: got %v, want %v", c, got, want[c])
			}
		}
		time.Sleep(50 * time.Millisecond)
		for _, c := range channels {
			if got := len(h.got(c)); got != len(want[c]) {
				t.Errorf("%s: %d messages, want %d (at most once)", c, got, len(want[c]))
			}
		}
	})

	t.Run("PointToPoint", func(t *testing.T) {
		// Any channel name works, a session's or a user's included, and
		// names with characters that mean something to Redis Cluster.
		b1 := newBroker(t, broker.Options{})
		b2 := newBroker(t, broker.Options{})
		h1, h2 := newRecorder(), newRecorder()
		b1.Start(h1)
		b2.Start(h2)
		names := []string{"session:9f2c", "user:42", "a{b}c", "{x", "}y{", "with space", ""}
		for _, c := range names {
			mustSubscribe(t, b2, c)
		}
		mustSubscribe(t, b1, "session:other")
		for _, c := range names {
			mustPublish(t, b1, c, "to "+c)
		}
		for _, c := range names {
			if got := h2.waitFor(t, c, 1); !slices.Equal(got, []string{"to " + c}) {
				t.Errorf("%q: got %v", c, got)
			}
		}
		mustPublish(t, b2, "session:other", "back")
		h1.waitFor(t, "session:other", 1)
		if got := h1.got("session:9f2c"); len(got) != 0 {
			t.Errorf("b1 got %v on a channel it did not subscribe to", got)
		}
	})

	t.Run("ClaimMany", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		other := newBroker(t, broker.Options{})
		if ok, err := b.Claim(ctx, "dedup:1:2:b", time.Minute); err != nil || !ok {
			t.Fatalf("Claim: got %v, %v, want true", ok, err)
		}
		out, err := b.ClaimMany(ctx, nil, time.Minute)
		if err != nil || len(out) != 0 {
			t.Fatalf("ClaimMany(nil): got %v, %v, want empty", out, err)
		}
		// Keys of several chats (several shards of a cluster), one claimed
		// already, one twice in the batch.
		keys := []string{"dedup:1:2:a", "dedup:1:2:b", "dedup:2:2:a", "dedup:3:9:z", "dedup:1:2:a", "plain-key"}
		for i := range 40 {
			keys = append(keys, fmt.Sprintf("dedup:%d:1:m", 100+i))
		}
		out, err = b.ClaimMany(ctx, keys, time.Minute)
		if err != nil {
			t.Fatalf("ClaimMany: %v", err)
		}
		want := make([]bool, len(keys))
		for i := range want {
			want[i] = true
		}
		want[1], want[4] = false, false // claimed before; a repeat
		if !slices.Equal(out, want) {
			t.Errorf("ClaimMany: got %v, want %v", out, want)
		}
		// Everything is claimed now, on any replica, one by one or in bulk.
		for _, k := range keys[:4] {
			if ok, err := other.Claim(ctx, k, time.Minute); err != nil || ok {
				t.Errorf("Claim(%s) after ClaimMany: got %v, %v, want false", k, ok, err)
			}
		}
		out, err = other.ClaimMany(ctx, keys, time.Minute)
		if err != nil || slices.Contains(out, true) {
			t.Errorf("ClaimMany again: got %v, %v, want all false", out, err)
		}
		// The TTL applies.
		if out, err := b.ClaimMany(ctx, []string{"dedup:7:7:short"}, 150*time.Millisecond); err != nil || !out[0] {
			t.Fatalf("ClaimMany short: got %v, %v", out, err)
		}
		time.Sleep(300 * time.Millisecond)
		if out, err := other.ClaimMany(ctx, []string{"dedup:7:7:short"}, time.Minute); err != nil || !out[0] {
			t.Errorf("ClaimMany after ttl: got %v, %v, want [true]", out, err)
		}
	})

	t.Run("ClaimManyConcurrent", func(t *testing.T) {
		brokers := []broker.Broker{newBroker(t, broker.Options{}), newBroker(t, broker.Options{})}
		const goroutines, keys = 8, 30
		var batch []string
		for i := range keys {
			batch = append(batch, fmt.Sprintf("dedup:%d:5:race", i))
		}
		wins := make([]atomic.Int32, keys)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				// Each goroutine claims the keys in its own order.
				order := slices.Clone(batch)
				for i := range order {
					j := (i*(g+1) + g) % len(order)
					order[i], order[j] = order[j], order[i]
				}
				out, err := brokers[g%2].ClaimMany(ctx, order, time.Minute)
				if err != nil {
					t.Errorf("ClaimMany: %v", err)
					return
				}
				for i, ok := range out {
					if ok {
						wins[slices.Index(batch, order[i])].Add(1)
					}
				}
			})
		}
		wg.Wait()
		for i := range wins {
			if got := wins[i].Load(); got != 1 {
				t.Errorf("%s: won by %d calls, want 1", batch[i], got)
			}
		}
	})

	t.Run("PresenceMany", func(t *testing.T) {
		// Many users in one call: in a cluster they live on many slots.
		b := newBroker(t, broker.Options{})
		other := newBroker(t, broker.Options{})
		var ids, even []int64
		for i := range int64(300) {
			ids = append(ids, 1000+i)
			if i%2 == 0 {
				even = append(even, 1000+i)
			}
		}
		if err := b.PresenceRefresh(ctx, "r1", even); err != nil {
			t.Fatalf("PresenceRefresh: %v", err)
		}
		online, err := other.Online(ctx, ids)
		slices.Sort(online)
		if err != nil || !slices.Equal(online, even) {
			t.Fatalf("Online: got %d users (%v), want the %d refreshed", len(online), err, len(even))
		}
		for _, id := range even {
			if last, err := other.PresenceLeave(ctx, "r1", id); err != nil || !last {
				t.Fatalf("PresenceLeave(%d): got %v, %v, want true", id, last, err)
			}
		}
		if online, err := b.Online(ctx, ids); err != nil || len(online) != 0 {
			t.Errorf("Online after leaves: got %v, %v, want none", online, err)
		}
	})

	t.Run("PingClose", func(t *testing.T) {
		b := newBroker(t, broker.Options{})
		b.Start(newRecorder())
		mustSubscribe(t, b, "c")
		if err := b.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := b.Ping(ctx); err == nil {
			t.Error("Ping after Close: got nil error, want one")
		}
		if err := b.Publish(ctx, "c", nil); err == nil {
			t.Error("Publish after Close: got nil error, want one")
		}
		if err := b.Subscribe(ctx, "d"); err == nil {
			t.Error("Subscribe after Close: got nil error, want one")
		}
		if err := b.PublishMany(ctx, []broker.Publication{{Channel: "c"}}); err == nil {
			t.Error("PublishMany after Close: got nil error, want one")
		}
		if out, err := b.ClaimMany(ctx, []string{"k", "l"}, time.Minute); err == nil || len(out) != 2 {
			t.Errorf("ClaimMany after Close: got %v, %v, want two falses and an error", out, err)
		}
	})
}
