package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/windi-chat/windi/testkit"
)

// redisCluster is a Redis Cluster a test starts for itself with
// bench/redis-cluster.sh (3 masters, 3 replicas, cluster-node-timeout
// 2 s), on loopback ports nobody else uses and with its data in the test's
// temp dir; it is shut down when the test ends. Never the shared cluster
// on 7100-7105 nor the shared Redis on 6379.
type redisCluster struct {
	t    *testing.T
	dir  string
	port int // the first node's; the others follow
	url  string
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr string
	master   bool
	failed   bool // fail or fail? flag
	slots    [][2]int
}

func (n clusterNode) port() int {
	_, p, _ := net.SplitHostPort(n.addr)
	v, _ := strconv.Atoi(p)
	return v
}

func (n clusterNode) owns(slot int) bool {
	for _, r := range n.slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

func (n clusterNode) slotRanges() string {
	var parts []string
	for _, r := range n.slots {
		parts = append(parts, fmt.Sprintf("%d-%d", r[0], r[1]))
	}
	return strings.Join(parts, ",")
}

// clusterPorts finds a first port P such that P..P+5 and the cluster bus
// ports P+10000..P+10005 are all free on 127.0.0.1.
func clusterPorts(t *testing.T) int {
	t.Helper()
	free := func(p int) bool {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		ln.Close()
		return true
	}
	for range 100 {
		base := 20000 + rand.IntN(25000)
		ok := true
		for p := base; p < base+6 && ok; p++ {
			ok = free(p) && free(p+10000)
		}
		if ok {
			return base
		}
	}
	t.Fatal("no 6 free consecutive ports (and their bus ports) for a Redis Cluster")
	return 0
}

// startRedisCluster starts a cluster of the test's own.
func startRedisCluster(t *testing.T) *redisCluster {
	t.Helper()
	rc := &redisCluster{t: t, dir: filepath.Join(t.TempDir(), "nodes"), port: clusterPorts(t)}
	script := filepath.Join(repoRoot(t), "bench/redis-cluster.sh")
	env := append(os.Environ(), fmt.Sprintf("REDIS_CLUSTER_PORT=%d", rc.port), "REDIS_CLUSTER_DIR="+rc.dir)
	t.Cleanup(func() {
		cmd := exec.Command("bash", script, "stop")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("redis-cluster.sh stop: %v\n%s", err, out)
		}
	})
	start := time.Now()
	cmd := exec.Command("bash", script, "start")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("redis-cluster.sh start: %v\n%s%s", err, out, stderr)
	}
	rc.url = strings.TrimSpace(string(out))
	// A replica fails over only once it has synced with its master: wait
	// for every replica's link (a fresh cluster's first sync can take
	// seconds on a busy machine).
	if err := testkit.WaitFor(30*time.Second, rc.replicasInSync); err != nil {
		t.Fatalf("the cluster's replicas did not sync with their masters within 30 s")
	}
	t.Logf("Redis Cluster on 127.0.0.1:%d-%d up in %s: %s", rc.port, rc.port+5, secs(time.Since(start)), rc.url)
	return rc
}

// replicasInSync reports whether every replica node says
// master_link_status:up.
func (rc *redisCluster) replicasInSync() bool {
	for p := rc.port; p < rc.port+6; p++ {
		c := rc.node(p)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "replication").Result()
		cancel()
		c.Close()
		if err != nil || (strings.Contains(info, "role:slave") && !strings.Contains(info, "master_link_status:up")) {
			return false
		}
	}
	return true
}

// node is a client of one node, for the test's own questions.
func (rc *redisCluster) node(port int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
}

// nodes reads CLUSTER NODES from the node on port.
func (rc *redisCluster) nodes(port int) ([]clusterNode, error) {
	c := rc.node(port)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	text, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var ns []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := clusterNode{id: f[0], addr: addr, master: strings.Contains(f[2], "master"), failed: strings.Contains(f[2], "fail")}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue // a slot being migrated
			}
			lo, hi, found := strings.Cut(s, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if found {
				b, _ = strconv.Atoi(hi)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// owner returns the live master that the node on port says owns slot.
func (rc *redisCluster) owner(port, slot int) (clusterNode, bool) {
	ns, err := rc.nodes(port)
	if err != nil {
		return clusterNode{}, false
	}
	for _, n := range ns {
		if n.master && !n.failed && n.owns(slot) {
			return n, true
		}
	}
	return clusterNode{}, false
}

// stateOK reports whether the node on port says cluster_state:ok.
func (rc *redisCluster) stateOK(port int) bool {
	c := rc.node(port)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	return err == nil && strings.Contains(info, "cluster_state:ok")
}

// keySlot asks the node on port for the hash slot of key.
func (rc *redisCluster) keySlot(port int, key string) (int, error) {
	c := rc.node(port)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v, err := c.ClusterKeySlot(ctx, key).Result()
	return int(v), err
}

// pid is the process of the node on port (bench/redis-cluster.sh writes
// one pid file per node).
func (rc *redisCluster) pid(port int) (int, error) {
	b, err := os.ReadFile(filepath.Join(rc.dir, strconv.Itoa(port), "redis.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// TestRedisClusterFailover kills (SIGKILL) the master of a Redis Cluster
// that owns the group chat's channel and dedup keys, while every device
// sends through nginx to two replicas on that cluster. Its replica takes
// over (cluster-node-timeout 2 s); meanwhile the replicas' publishes and
// dedup claims on that shard fail (sends are still stored and acked: the
// database is the durable guard), and once the slot has a master again
// the brokers subscribe the channel there and report it, so each replica
// refills from the database. Every acked message reaches every connection
// exactly once, in order. The outage window is the time from the kill
// until the replica owns the slot.
func TestRedisClusterFailover(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	rc := startRedisCluster(t)
	c := startCluster(t, testkit.Options{Replicas: 2, Nginx: true, RedisURL: rc.url})
	l := newLoad(t, c, loadOptions{})
	l.spread(t, 2)

	// The group's channel, as the broker names it in cluster mode
	// (realtime/broker/names.go): its slot's master is the victim.
	slot, err := rc.keySlot(rc.port, c.Prefix+fmt.Sprintf("{chat:%d}", l.group))
	if err != nil {
		t.Fatal(err)
	}
	victim, ok := rc.owner(rc.port, slot)
	if !ok {
		t.Fatalf("no master owns slot %d", slot)
	}
	witness := rc.port // a node that stays up, to ask
	for witness == victim.port() {
		witness++
	}
	pid, err := rc.pid(victim.port())
	if err != nil {
		t.Fatal(err)
	}

	l.start()
	time.Sleep(3 * time.Second)
	killedAt := l.markFault()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 the master on %s (pid %d): %v", victim.addr, pid, err)
	}

	// The outage: until a live master owns the slot again, then until
	// every surviving node says cluster_state:ok.
	var promoted clusterNode
	var promotedAfter, okAfter time.Duration
	if err := testkit.WaitFor(30*time.Second, func() bool {
		n, ok := rc.owner(witness, slot)
		if ok && n.id != victim.id {
			promoted, promotedAfter = n, time.Since(killedAt)
			return true
		}
		return false
	}); err != nil {
		t.Fatalf("no replica took over slot %d within 30 s of the kill", slot)
	}
	if err := testkit.WaitFor(30*time.Second, func() bool {
		for p := rc.port; p < rc.port+6; p++ {
			if p != victim.port() && !rc.stateOK(p) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Errorf("cluster_state not ok on every surviving node within 30 s of the kill")
	}
	okAfter = time.Since(killedAt)

	res, recovery := l.finish(t, ending{recoverWithin: 30 * time.Second, sendUntil: killedAt.Add(8 * time.Second)})
	report(t, "redis-cluster-failover", start, res,
		fmt.Sprintf("killed (SIGKILL) the master %s owning slot %d (slots %s: the group's channel and dedup keys)", victim.addr, slot, victim.slotRanges()),
		fmt.Sprintf("its replica %s took the slot over after %s (outage window), cluster_state ok on every surviving node after %s", promoted.addr, secs(promotedAfter), secs(okAfter)),
		"recovery "+secs(recovery)+" after the kill",
		fmt.Sprintf("%d publishes and %d dedup claims failed meanwhile (stored and acked anyway), %d broker resubscriptions refilled the replicas from the database",
			c.LogCount(`"event":"broker.error"`, `"op":"publish"`), c.LogCount(`"event":"dedup.error"`), c.LogCount(`"event":"broker.resubscribed"`)),
		c.NginxStats())
	res.check(t)
}
