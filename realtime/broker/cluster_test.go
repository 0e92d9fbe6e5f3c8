package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/windi-chat/windi/realtime/broker"
)

// The cluster tests run against the Redis Cluster that
// WINDI_TEST_REDIS_CLUSTER_URL names (bench/redis-cluster.sh starts one;
// .ci/run does in its go_test step). Without it they skip, and fail when
// CI=true.

func clusterURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("WINDI_TEST_REDIS_CLUSTER_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("WINDI_TEST_REDIS_CLUSTER_URL is not set (CI=true, so this fails): start a cluster with bench/redis-cluster.sh")
		}
		t.Skip("WINDI_TEST_REDIS_CLUSTER_URL is not set; bench/redis-cluster.sh start prints one")
	}
	return u
}

// clusterAdmin returns a client of the test cluster, failing or skipping
// as redisAdmin does when it is unreachable.
func clusterAdmin(t *testing.T) *redis.ClusterClient {
	t.Helper()
	u := clusterURL(t)
	o, err := redis.ParseClusterURL(u)
	if err != nil {
		t.Fatalf("parse WINDI_TEST_REDIS_CLUSTER_URL: %v", err)
	}
	c := redis.NewClusterClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() }); err != nil {
		_ = c.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis cluster %s unreachable: %v", u, err)
		}
		t.Skipf("redis cluster %s unreachable: %v", u, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// cleanClusterPrefix deletes every key under prefix, on every master.
func cleanClusterPrefix(t *testing.T, admin *redis.ClusterClient, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := admin.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		iter := n.Scan(ctx, 0, prefix+"*", 500).Iterator()
		pipe := n.Pipeline()
		for iter.Next(ctx) {
			pipe.Del(ctx, iter.Val()) // one key per DEL: keys of many slots
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if pipe.Len() == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	if err != nil {
		t.Errorf("clean %s*: %v", prefix, err)
	}
}

func newClusterBroker(t *testing.T, prefix string, opts broker.Options) *broker.Redis {
	t.Helper()
	opts.Prefix = prefix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := broker.NewRedisCluster(ctx, withClientName(clusterURL(t), strings.TrimSuffix(prefix, ":")), opts)
	if err != nil {
		t.Fatalf("NewRedisCluster: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestRedisCluster(t *testing.T) {
	admin := clusterAdmin(t)
	var mu sync.Mutex
	prefixes := make(map[*testing.T]string)
	runConformance(t, func(t *testing.T, opts broker.Options) broker.Broker {
		t.Helper()
		mu.Lock()
		prefix, ok := prefixes[t]
		if !ok {
			prefix = randomPrefix(t)
			prefixes[t] = prefix
			t.Cleanup(func() { cleanClusterPrefix(t, admin, prefix) })
		}
		mu.Unlock()
		return newClusterBroker(t, prefix, opts)
	})
}

func TestRedisClusterBadConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := broker.NewRedisCluster(ctx, "redis://127.0.0.1:1", broker.Options{}); err == nil {
		t.Error("NewRedisCluster(unreachable): got nil error, want one")
	}
	if _, err := broker.NewRedisCluster(ctx, "redis://h:1?bogus=1", broker.Options{}); err == nil {
		t.Error("NewRedisCluster(bad option): got nil error, want one")
	}
	u := clusterURL(t)
	if _, err := broker.NewRedisCluster(ctx, u, broker.Options{Prefix: "a{b}:"}); err == nil {
		t.Error("NewRedisCluster with a braced prefix: got nil error, want one")
	}
	// A single server is not a cluster.
	if _, err := broker.NewRedisCluster(ctx, redisURL(), broker.Options{}); err == nil {
		t.Error("NewRedisCluster(single server): got nil error, want one")
	}
}

// TestRedisClusterNames checks where the broker's keys and subscriptions
// live: a chat's channel and dedup keys on the slot of its hash tag, the
// subscription as a sharded one on the master owning it, and nowhere else.
func TestRedisClusterNames(t *testing.T) {
	admin := clusterAdmin(t)
	prefix := randomPrefix(t)
	t.Cleanup(func() { cleanClusterPrefix(t, admin, prefix) })
	b := newClusterBroker(t, prefix, broker.Options{})
	b.Start(newRecorder())
	ctx := context.Background()

	for _, c := range []string{"chat:12", "user:7"} {
		mustSubscribe(t, b, c)
	}
	if ok, err := b.Claim(ctx, "dedup:12:7:abc", time.Minute); err != nil || !ok {
		t.Fatalf("Claim: %v, %v", ok, err)
	}
	if _, err := b.PresenceJoin(ctx, "r1", 7); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Hit(ctx, "login:email:a@b.c", time.Minute); err != nil {
		t.Fatal(err)
	}
	slotOf := func(key string) int64 {
		n, err := admin.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
		}
		return n
	}
	if a, b := slotOf(prefix+"dedup:{chat:12}:7:abc"), slotOf(prefix+"{chat:12}"); a != b {
		t.Errorf("dedup key in slot %d, chat channel in slot %d: want one slot", a, b)
	}
	if a, b := slotOf(prefix+"presence:{user:7}"), slotOf(prefix+"{user:7}"); a != b {
		t.Errorf("presence key in slot %d, user channel in slot %d: want one slot", a, b)
	}
	for _, k := range []string{prefix + "dedup:{chat:12}:7:abc", prefix + "presence:{user:7}"} {
		if n, err := admin.Exists(ctx, k).Result(); err != nil || n != 1 {
			t.Errorf("EXISTS %s: got %d, %v, want 1", k, n, err)
		}
	}
	w := strconv.FormatInt(time.Now().UnixMilli()/time.Minute.Milliseconds(), 10)
	if n, err := admin.Get(ctx, prefix+"rl:{login:email:a@b.c}:"+w).Int64(); err != nil || n != 1 {
		t.Errorf("rate-limit counter: got %d, %v, want 1", n, err)
	}

	// The chat channel is a sharded subscription on its slot's master only,
	// and no classic one anywhere.
	channel := prefix + "{chat:12}"
	owner, err := admin.MasterForKey(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}
	err = admin.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		shard, err := n.PubSubShardNumSub(ctx, channel).Result()
		if err != nil {
			return err
		}
		classic, err := n.PubSubNumSub(ctx, channel).Result()
		if err != nil {
			return err
		}
		want := int64(0)
		if n.Options().Addr == owner.Options().Addr {
			want = 1
		}
		if shard[channel] != want || classic[channel] != 0 {
			return fmt.Errorf("%s: %d sharded and %d classic subscribers, want %d and 0", n.Options().Addr, shard[channel], classic[channel], want)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestKeySlot checks the broker's slot function against the cluster's.
func TestKeySlot(t *testing.T) {
	admin := clusterAdmin(t)
	for _, k := range []string{"", "a", "123456789", "{chat:12}", "windi:{chat:12}", "x{}y", "{}", "a{b}c{d}", "{x", "}y{", "foo{bar}{zap}", "windi:dedup:{chat:9}:1:m"} {
		want, err := admin.ClusterKeySlot(context.Background(), k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
		}
		if got := broker.KeySlot(k); int64(got) != want {
			t.Errorf("KeySlot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
	}
}

// clusterNode is what the tests need to know about one node.
type clusterNode struct {
	id, addr, masterID string
	master, failing    bool
	slots              [][2]int
}

func clusterNodes(t *testing.T, admin *redis.ClusterClient) []clusterNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		text string
	)
	// Any node that answers will do.
	err := admin.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
		s, err := n.ClusterNodes(ctx).Result()
		if err == nil {
			mu.Lock()
			text = s
			mu.Unlock()
		}
		return nil
	})
	if err != nil || text == "" {
		t.Fatalf("CLUSTER NODES: %v", err)
	}
	return parseClusterNodes(text)
}

func parseClusterNodes(text string) []clusterNode {
	var nodes []clusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		n := clusterNode{id: f[0], addr: strings.Split(f[1], "@")[0], masterID: f[3]}
		n.master = strings.Contains(f[2], "master")
		n.failing = strings.Contains(f[2], "fail")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, _ := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if hi != "" {
				b, _ = strconv.Atoi(hi)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes
}

func nodeClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, ReadTimeout: 3 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitClusterHealthy waits until every node reports cluster_state:ok and
// none is flagged failing, every master with a replica.
func waitClusterHealthy(t *testing.T, admin *redis.ClusterClient, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := clusterHealth(t, admin)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not healthy after %v: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterHealth checks every node's own view: cluster_state:ok, no node
// flagged failing, every master that owns slots with a replica, and the
// same masters in every view.
func clusterHealth(t *testing.T, admin *redis.ClusterClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var first string
	for _, n := range clusterNodes(t, admin) {
		c := nodeClient(t, n.addr)
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: %w", n.addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state is not ok", n.addr)
		}
		text, err := c.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: %w", n.addr, err)
		}
		view := parseClusterNodes(text)
		replicas := make(map[string]int)
		var masters []string
		for _, m := range view {
			if m.failing {
				return fmt.Errorf("%s sees %s flagged failing", n.addr, m.addr)
			}
			if !m.master {
				replicas[m.masterID]++
			} else if len(m.slots) > 0 {
				masters = append(masters, fmt.Sprint(m.addr, m.slots))
			}
		}
		for _, m := range view {
			if m.master && len(m.slots) > 0 && replicas[m.id] == 0 {
				return fmt.Errorf("%s sees master %s without a replica", n.addr, m.addr)
			}
		}
		slices.Sort(masters)
		if v := strings.Join(masters, " "); first == "" {
			first = v
		} else if v != first {
			return fmt.Errorf("views differ: %s vs %s", v, first)
		}
	}
	return nil
}

// ownerOf returns the master node that owns key's slot, and one of its
// replicas.
func ownerOf(t *testing.T, admin *redis.ClusterClient, key string) (master, replica clusterNode) {
	t.Helper()
	slot, err := admin.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	nodes := clusterNodes(t, admin)
	for _, n := range nodes {
		for _, r := range n.slots {
			if n.master && int64(r[0]) <= slot && slot <= int64(r[1]) {
				master = n
			}
		}
	}
	if master.id == "" {
		t.Fatalf("no master owns slot %d", slot)
	}
	for _, n := range nodes {
		if n.masterID == master.id {
			replica = n
		}
	}
	if replica.id == "" {
		t.Fatalf("master %s has no replica", master.addr)
	}
	return master, replica
}

// spreadChannels returns chat channels that cover every master.
func spreadChannels(t *testing.T, admin *redis.ClusterClient, prefix string) []string {
	t.Helper()
	masters := make(map[string]bool)
	var channels []string
	for i := 1; len(channels) < 40 && (len(masters) < 3 || len(channels) < 12); i++ {
		c := fmt.Sprintf("chat:%d", i)
		m, _ := ownerOf(t, admin, prefix+"{"+c+"}")
		masters[m.addr] = true
		channels = append(channels, c)
	}
	if len(masters) < 3 {
		t.Fatalf("channels cover %d masters, want 3", len(masters))
	}
	return channels
}

// checkFailover is the core of the failover tests: a broker subscribed to
// channels on every shard, a publisher broker, and fault, which takes the
// master of the first channel away. The channels of that master must be
// reported resubscribed within bound, and delivery must resume on every
// channel.
func checkFailover(t *testing.T, fault func(t *testing.T, master, replica clusterNode), bound time.Duration) {
	admin := clusterAdmin(t)
	waitClusterHealthy(t, admin, 30*time.Second)
	prefix := randomPrefix(t)
	t.Cleanup(func() { cleanClusterPrefix(t, admin, prefix) })
	sub := newClusterBroker(t, prefix, broker.Options{})
	pub := newClusterBroker(t, prefix, broker.Options{})
	h := newRecorder()
	sub.Start(h)
	pub.Start(newRecorder())
	channels := spreadChannels(t, admin, prefix)
	for _, c := range channels {
		mustSubscribe(t, sub, c)
	}
	for _, c := range channels {
		mustPublish(t, pub, c, "before")
	}
	for _, c := range channels {
		h.waitFor(t, c, 1)
	}
	master, replica := ownerOf(t, admin, prefix+"{"+channels[0]+"}")
	var affected []string
	for _, c := range channels {
		if m, _ := ownerOf(t, admin, prefix+"{"+c+"}"); m.id == master.id {
			affected = append(affected, c)
		}
	}

	start := time.Now()
	fault(t, master, replica)
	if !h.waitUntil(bound, func() bool {
		seen := make(map[string]bool)
		for _, call := range h.resubs {
			for _, c := range call {
				seen[c] = true
			}
		}
		for _, c := range affected {
			if !seen[c] {
				return false
			}
		}
		return true
	}) {
		h.mu.Lock()
		got := slices.Clone(h.resubs)
		h.mu.Unlock()
		t.Fatalf("Resubscribed within %v: got %v, want at least %v", bound, got, affected)
	}
	took := time.Since(start)
	t.Logf("master %s (%d of %d channels) taken away: Resubscribed after %v", master.addr, len(affected), len(channels), took.Round(time.Millisecond))

	// Delivery resumes on every channel. The publisher may need a moment
	// to learn the new topology: its errors are the caller's to handle,
	// so the test publishes again until each channel delivers.
	for _, c := range channels {
		n := len(h.got(c))
		deadline := time.Now().Add(15 * time.Second)
		for len(h.got(c)) == n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing delivered within 15s after the failover", c)
			}
			if err := pub.Publish(context.Background(), c, []byte("after")); err != nil {
				t.Logf("publish %s after the failover: %v (retrying)", c, err)
			}
			h.waitUntil(300*time.Millisecond, func() bool { return len(h.received[c]) > n })
		}
	}
	t.Logf("delivery resumed on all %d channels %v after the fault", len(channels), time.Since(start).Round(time.Millisecond))
	if h.overlap.Load() {
		t.Error("handler calls overlapped, want one goroutine")
	}
}

// TestRedisClusterFailover promotes the replica of a subscribed channel's
// master (CLUSTER FAILOVER): the old master drops its shard channels'
// subscribers, and the broker subscribes them on the new one.
func TestRedisClusterFailover(t *testing.T) {
	checkFailover(t, func(t *testing.T, master, replica clusterNode) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := nodeClient(t, replica.addr).ClusterFailover(ctx).Err(); err != nil {
			t.Fatalf("CLUSTER FAILOVER on %s: %v", replica.addr, err)
		}
		t.Cleanup(func() { waitClusterHealthy(t, clusterAdmin(t), 30*time.Second) })
	}, 10*time.Second)
}

// TestRedisClusterMasterStopped stops a master's process (SIGSTOP): its
// connections stay open and say nothing, so only the broker's ping notices;
// the replica takes over after cluster-node-timeout. The master continues
// afterwards and rejoins as a replica.
func TestRedisClusterMasterStopped(t *testing.T) {
	checkFailover(t, func(t *testing.T, master, replica clusterNode) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		info, err := nodeClient(t, master.addr).Info(ctx, "server").Result()
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
				pid, _ = strconv.Atoi(v)
			}
		}
		if pid <= 0 || syscall.Kill(pid, 0) != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("master %s (pid %d) is not a process of this machine", master.addr, pid)
			}
			t.Skipf("master %s (pid %d) is not a process of this machine", master.addr, pid)
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %d: %v", pid, err)
		}
		t.Logf("stopped master %s (pid %d)", master.addr, pid)
		t.Cleanup(func() {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Errorf("SIGCONT %d: %v", pid, err)
			}
			waitClusterHealthy(t, clusterAdmin(t), 30*time.Second)
		})
	}, 25*time.Second)
}

// TestRedisClusterSlotMoved moves a subscribed channel's (empty) slot to
// another master, as resharding does, and back: the old owner drops the
// slot's subscribers, and the broker follows the slot.
func TestRedisClusterSlotMoved(t *testing.T) {
	admin := clusterAdmin(t)
	waitClusterHealthy(t, admin, 30*time.Second)
	ctx := context.Background()
	prefix := randomPrefix(t)
	t.Cleanup(func() { cleanClusterPrefix(t, admin, prefix) })
	sub := newClusterBroker(t, prefix, broker.Options{})
	pub := newClusterBroker(t, prefix, broker.Options{})
	h := newRecorder()
	sub.Start(h)
	pub.Start(newRecorder())

	// A channel whose slot holds no key, so moving it needs no MIGRATE.
	var channel string
	var slot int64
	for i := 0; ; i++ {
		channel = fmt.Sprintf("move:%d", i)
		var err error
		if slot, err = admin.ClusterKeySlot(ctx, prefix+"{"+channel+"}").Result(); err != nil {
			t.Fatal(err)
		}
		from, _ := ownerOf(t, admin, prefix+"{"+channel+"}")
		if n, err := nodeClient(t, from.addr).ClusterCountKeysInSlot(ctx, int(slot)).Result(); err == nil && n == 0 {
			break
		}
	}
	from, _ := ownerOf(t, admin, prefix+"{"+channel+"}")
	var to clusterNode
	for _, n := range clusterNodes(t, admin) {
		if n.master && n.id != from.id && len(n.slots) > 0 {
			to = n
			break
		}
	}
	mustSubscribe(t, sub, channel)
	mustSubscribe(t, sub, "chat:1") // somewhere else, probably unaffected
	mustPublish(t, pub, channel, "before")
	h.waitFor(t, channel, 1)

	move := func(src, dst clusterNode) {
		t.Helper()
		s, d := nodeClient(t, src.addr), nodeClient(t, dst.addr)
		steps := []struct {
			c    *redis.Client
			args []any
		}{
			{d, []any{"cluster", "setslot", slot, "importing", src.id}},
			{s, []any{"cluster", "setslot", slot, "migrating", dst.id}},
			{d, []any{"cluster", "setslot", slot, "node", dst.id}},
			{s, []any{"cluster", "setslot", slot, "node", dst.id}},
		}
		for _, st := range steps {
			if err := st.c.Do(ctx, st.args...).Err(); err != nil {
				t.Fatalf("%v on %s: %v", st.args, st.c.Options().Addr, err)
			}
		}
		// The other masters learn it by gossip; tell them too.
		for _, n := range clusterNodes(t, admin) {
			if n.master && n.id != src.id && n.id != dst.id {
				_ = nodeClient(t, n.addr).Do(ctx, "cluster", "setslot", slot, "node", dst.id).Err()
			}
		}
	}
	for round, step := range []struct{ src, dst clusterNode }{{from, to}, {to, from}} {
		calls := h.resubscribedCalls()
		start := time.Now()
		move(step.src, step.dst)
		if !h.waitUntil(10*time.Second, func() bool {
			for _, call := range h.resubs[calls:] {
				if slices.Contains(call, channel) {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("round %d: %s not reported resubscribed within 10s after its slot moved %s -> %s", round, channel, step.src.addr, step.dst.addr)
		}
		t.Logf("slot %d moved %s -> %s: Resubscribed after %v", slot, step.src.addr, step.dst.addr, time.Since(start).Round(time.Millisecond))
		n := len(h.got(channel))
		deadline := time.Now().Add(10 * time.Second)
		for len(h.got(channel)) == n {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: nothing delivered on %s within 10s after the move", round, channel)
			}
			if err := pub.Publish(ctx, channel, []byte("after")); err != nil {
				t.Logf("publish after the move: %v (retrying)", err)
			}
			h.waitUntil(300*time.Millisecond, func() bool { return len(h.received[channel]) > n })
		}
		// Where the subscription lives now: on the new owner only.
		shard, err := nodeClient(t, step.dst.addr).PubSubShardNumSub(ctx, prefix+"{"+channel+"}").Result()
		if err != nil || shard[prefix+"{"+channel+"}"] != 1 {
			t.Errorf("round %d: %s has %v subscribers (%v), want 1", round, step.dst.addr, shard, err)
		}
	}
	mustPublish(t, pub, "chat:1", "still")
	h.waitFor(t, "chat:1", 1)
}
