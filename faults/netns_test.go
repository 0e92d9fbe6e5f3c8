package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/windi-chat/windi/testkit"
)

// The network-fault tests put one of two replicas in a network namespace
// of the test's own, linked to the host by three veth pairs in a private
// /28 that only the namespace and the host use:
//
//	link   host side         namespace side   carries
//	http   10.a.b.1/30       10.a.b.2/30      nginx (on the host) to the replica
//	redis  10.a.b.5/30       10.a.b.6/30      the replica to Redis
//	pg     10.a.b.9/30       10.a.b.10/30     the replica to Postgres
//
// The replica's Redis and Postgres are the shared ones on 127.0.0.1,
// reached through toxiproxy proxies the test embeds, listening on the host
// side of their links (10.a.b.5 and 10.a.b.9) and forwarding to
// 127.0.0.1:6379 and :5432. The shared services are never touched: a fault
// is `ip link set <host side> down` (a veth whose peer is down drops what
// it is given: no error, no RST, the sockets on both ends stay open, as
// when a switch or NAT on the way dies) or a toxic on a proxy (latency).
// Nothing leaves these links: the namespace has no default route.
//
// The namespace is deleted when the test ends, whatever happened (its
// veths go with it); one left behind by a test process that was killed is
// deleted by the next run (its name carries the pid of the process that
// made it).

const netnsPrefix = "windi-ft-"

// netLab is one namespace, its links and the proxies on them.
type netLab struct {
	t     *testing.T
	ns    string
	base  [3]byte // 10, a, b: the links use 10.a.b.0/28
	links map[string]vethLink
	redis *toxiproxy.Proxy
	pg    *toxiproxy.Proxy
}

// vethLink is one veth pair: host is the host side's name.
type vethLink struct {
	host, peer     string
	hostIP, peerIP string
}

// requireNetns skips unless the test can create network namespaces (root,
// iproute2); with CI=true it fails instead.
func requireNetns(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "network namespaces need root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "ip (iproute2) is not installed"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true, so this fails)")
	}
	t.Skip(why)
}

// ipCmd runs ip with args.
func ipCmd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// sweepNetns deletes namespaces of this test whose process is gone.
func sweepNetns(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its test still runs
		}
		t.Logf("deleting network namespace %s left by a dead test process", name)
		_ = ipCmd("netns", "del", name)
	}
}

// freeSubnet picks 10.a.b.0/28 (a from 200) with no address or route of
// 10.a.b.0/24 on the host.
func freeSubnet(t *testing.T) [3]byte {
	t.Helper()
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip -4 addr show: %v", err)
	}
	routes, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	for range 100 {
		b := [3]byte{10, byte(200 + rand.IntN(50)), byte(rand.IntN(256))}
		prefix := fmt.Sprintf("10.%d.%d.", b[1], b[2])
		if !bytes.Contains(out, []byte(prefix)) && !bytes.Contains(routes, []byte(prefix)) {
			return b
		}
	}
	t.Fatal("no free 10.x.y.0/28 for the test's network namespace")
	return [3]byte{}
}

// startNetLab creates the namespace, its three links and the two proxies.
func startNetLab(t *testing.T) *netLab {
	t.Helper()
	requireNetns(t)
	sweepNetns(t)
	id := testkit.RandomHex(2)
	lab := &netLab{t: t, ns: fmt.Sprintf("%s%d-%s", netnsPrefix, os.Getpid(), id), base: freeSubnet(t), links: map[string]vethLink{}}
	if err := ipCmd("netns", "add", lab.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.close)
	if err := ipCmd("-n", lab.ns, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"http", "redis", "pg"} {
		l := vethLink{
			host:   fmt.Sprintf("wf%s%ch", id, name[0]),
			peer:   fmt.Sprintf("wf%s%cn", id, name[0]),
			hostIP: fmt.Sprintf("10.%d.%d.%d", lab.base[1], lab.base[2], 4*i+1),
			peerIP: fmt.Sprintf("10.%d.%d.%d", lab.base[1], lab.base[2], 4*i+2),
		}
		for _, args := range [][]string{
			{"link", "add", l.host, "type", "veth", "peer", "name", l.peer, "netns", lab.ns},
			{"addr", "add", l.hostIP + "/30", "dev", l.host},
			{"link", "set", l.host, "up"},
			{"-n", lab.ns, "addr", "add", l.peerIP + "/30", "dev", l.peer},
			{"-n", lab.ns, "link", "set", l.peer, "up"},
		} {
			if err := ipCmd(args...); err != nil {
				t.Fatal(err)
			}
		}
		lab.links[name] = l
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	lab.redis = lab.proxy(srv, "redis", lab.links["redis"].hostIP, hostPort(t, testkit.RedisURL(), "6379"))
	lab.pg = lab.proxy(srv, "pg", lab.links["pg"].hostIP, hostPort(t, testkit.AdminDatabaseURL(), "5432"))
	t.Logf("network namespace %s: http %s<->%s, redis %s -> %s, postgres %s -> %s",
		lab.ns, lab.links["http"].hostIP, lab.links["http"].peerIP, lab.redis.Listen, lab.redis.Upstream, lab.pg.Listen, lab.pg.Upstream)
	return lab
}

// hostPort is the host:port of a service URL.
func hostPort(t *testing.T, rawURL, defPort string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), defPort)
	}
	return u.Host
}

func (lab *netLab) proxy(srv *toxiproxy.ApiServer, name, ip, upstream string) *toxiproxy.Proxy {
	p := toxiproxy.NewProxy(srv, name, ip+":0", upstream)
	if err := p.Start(); err != nil {
		lab.t.Fatalf("toxiproxy %s on %s: %v", name, ip, err)
	}
	lab.t.Cleanup(p.Stop)
	return p
}

// close deletes the namespace; its veth pairs go with it.
func (lab *netLab) close() {
	for _, l := range lab.links {
		_ = ipCmd("link", "del", l.host) // gone already when the namespace went first
	}
	if err := ipCmd("netns", "del", lab.ns); err != nil {
		lab.t.Errorf("delete network namespace: %v", err)
	}
}

// cut takes the host side of link down: from then on both directions drop
// every packet, silently.
func (lab *netLab) cut(link string) {
	lab.t.Helper()
	if err := ipCmd("link", "set", lab.links[link].host, "down"); err != nil {
		lab.t.Fatal(err)
	}
}

// heal brings link back up.
func (lab *netLab) heal(link string) {
	lab.t.Helper()
	if err := ipCmd("link", "set", lab.links[link].host, "up"); err != nil {
		lab.t.Fatal(err)
	}
}

// place puts replica 2 in the namespace: it listens on the http link and
// reaches Redis and Postgres through the proxies; replica 1 stays on the
// host, on 127.0.0.1.
func (lab *netLab) place(r *testkit.Replica) {
	if r.Index != 2 {
		return
	}
	r.Host = lab.links["http"].peerIP
	r.Wrap = []string{"ip", "netns", "exec", lab.ns}
	r.Env = append(r.Env, "REDIS_URL=redis://"+lab.redis.Listen+"/0")
}

// placeDB finishes what place began once the database exists: the
// namespace replica's DATABASE_URL names the Postgres proxy.
func (lab *netLab) placeDB(c *testkit.Cluster) {
	u, err := url.Parse(c.DatabaseURL)
	if err != nil {
		lab.t.Fatal(err)
	}
	u.Host = lab.pg.Listen
	r := c.Replicas[1]
	r.Env = append(r.Env, "DATABASE_URL="+u.String())
}

// netCluster is a deployment with replica 2 in lab's namespace.
func netCluster(t *testing.T, lab *netLab) *testkit.Cluster {
	t.Helper()
	return startCluster(t, testkit.Options{Replicas: 2, Nginx: true, Place: lab.place, PlaceDB: lab.placeDB})
}

// logEvent is one line of a replica's JSON log.
type logEvent struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	Err   string    `json:"err"`
}

// events returns replica r's log lines with event name, at or after since.
func events(r *testkit.Replica, name string, since time.Time) []logEvent {
	f, err := os.Open(r.LogPath())
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte(`"event":"`+name+`"`)) {
			continue
		}
		var e logEvent
		if json.Unmarshal(sc.Bytes(), &e) == nil && !e.Time.Before(since) {
			out = append(out, e)
		}
	}
	return out
}

// firstEvent waits up to d for replica r to log event name at or after
// since; it returns the line.
func firstEvent(r *testkit.Replica, name string, since time.Time, d time.Duration) (logEvent, bool) {
	var e logEvent
	ok := testkit.WaitFor(d, func() bool {
		if es := events(r, name, since); len(es) > 0 {
			e = es[0]
			return true
		}
		return false
	}) == nil
	return e, ok
}

// TestNetRedisSilent cuts the namespace replica's link to Redis silently
// for 8 s while every device sends. Its subscription connection goes
// half-open: no error, no close, nothing arrives. The broker pings on it
// and drops it once it has been silent for SilenceTimeout (3 s), then
// dials again until the link is back, subscribes its channels on the new
// connection and reports them; the replica refills them from the database.
// Its own sends are still stored and acked (the dedup guard and publishes
// fail after go-redis's 3 s read timeout; the database is the durable
// guard, and the host replica reads what it missed from the database).
// Nothing acked is lost, repeated or out of order for any connection.
func TestNetRedisSilent(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	lab := startNetLab(t)
	c := netCluster(t, lab)
	inNS := c.Replicas[1]
	l := newLoad(t, c, loadOptions{})
	l.spread(t, 2)
	l.start()
	time.Sleep(2 * time.Second)

	cutAt := l.markFault()
	lab.cut("redis")
	lost, noticed := firstEvent(inNS, "broker.conn_lost", cutAt, 8*time.Second)
	sleepUntil(cutAt.Add(8 * time.Second))
	healAt := time.Now()
	lab.heal("redis")
	resub, resubscribed := firstEvent(inNS, "broker.resubscribed", cutAt, 20*time.Second)

	res, recovery := l.finish(t, ending{recoverWithin: 30 * time.Second, sendUntil: healAt.Add(5 * time.Second)})
	detected := "never"
	if noticed {
		detected = fmt.Sprintf("%s after the cut (%s)", secs(lost.Time.Sub(cutAt)), lost.Err)
		// SilenceTimeout is 3 s; the bound leaves room for a busy machine.
		if d := lost.Time.Sub(cutAt); d > 5*time.Second {
			t.Errorf("the silent subscription was dropped %s after the cut, want within 5 s (SilenceTimeout 3 s)", secs(d))
		}
	} else {
		t.Error("the replica in the namespace never dropped its silent subscription connection (no broker.conn_lost within 8 s of the cut)")
	}
	resubAfter := "never"
	if resubscribed {
		resubAfter = secs(resub.Time.Sub(healAt)) + " after the link came back"
	} else {
		t.Error("the replica in the namespace never reported a resubscription (broker.resubscribed)")
	}
	report(t, "net-redis-silent", start, res,
		"Redis link of the namespace replica down 8.00s (ip link set down: packets dropped, no RST)",
		"silent subscription dropped "+detected,
		"resubscribed "+resubAfter,
		"recovery "+secs(recovery)+" after the cut",
		fmt.Sprintf("namespace replica: %d publishes and %d dedup claims failed, %d broker resubscriptions refilled it from the database; host replica: %d resubscriptions",
			inNS.LogCount(`"event":"broker.error"`, `"op":"publish"`), inNS.LogCount(`"event":"dedup.error"`), inNS.LogCount(`"event":"broker.resubscribed"`),
			c.Replicas[0].LogCount(`"event":"broker.resubscribed"`)),
		c.NginxStats())
	res.check(t)
}

// pgCut is how long TestNetPostgresCut cuts the link: the REST probe,
// sent 1 s in, waits behind the batch in flight (refused after chat's
// commitTimeout, 10 s) and is refused at the latest 10 s after that.
const pgCut = 24 * time.Second

// TestNetPostgresCut cuts the namespace replica's link to Postgres
// silently for pgCut while every device sends. Statements written on the
// dead link get no answer and no error; the store's connections fail them
// after TCP_USER_TIMEOUT (5 s, repo/dial.go), new dials fail after the
// connect timeout (5 s), and a batch's transaction gives up after 10 s
// (chat's commitTimeout), so the replica's sends are refused with
// unavailable and none of them is stored; a REST send to it directly gets
// a 503 problem with code unavailable; /readyz on it answers 503. The host
// replica stores and acks meanwhile; its messages reach the namespace
// replica's connections (through Redis; gap fills wait for the link). Once
// the link is back the replica's sends are acked again. Nothing acked is
// lost, repeated or out of order; nothing refused is stored.
func TestNetPostgresCut(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	lab := startNetLab(t)
	c := netCluster(t, lab)
	inNS := c.Replicas[1]
	l := newLoad(t, c, loadOptions{})
	l.spread(t, 2)
	onNS := len(l.on(inNS.Name()))
	l.start()
	time.Sleep(2 * time.Second)

	// The REST probe goes to a chat of its own, which verify does not
	// read (it is no device's).
	prober, peer := l.register(t, "Prober"), l.register(t, "ProbePeer")
	probe := privateChat(t, prober, peer)
	direct := l.clientAt(t, inNS.URL, prober)

	cutAt := l.markFault()
	lab.cut("pg")
	var wg sync.WaitGroup
	var restCode int
	var restBody string
	var restAfter time.Duration
	wg.Go(func() {
		// A REST send straight to the namespace replica, during the cut.
		time.Sleep(time.Second)
		t0 := time.Now()
		code, body, _, err := sendREST(context.Background(), direct, probe, l.run+"-rest-during-cut", "sent over REST while the database is cut off")
		restCode, restBody, restAfter = code, body, time.Since(t0)
		if err != nil {
			restBody = err.Error()
		}
	})
	notReady, notReadyErr := waitFor503(inNS, 8*time.Second)
	sleepUntil(cutAt.Add(pgCut))
	healAt := time.Now()
	lab.heal("pg")
	wg.Wait()
	readyAgain, err := c.WaitReady(200, 30*time.Second)
	if err != nil {
		t.Error(err)
	}
	res, recovery := l.finish(t, ending{recoverWithin: 30 * time.Second, sendUntil: healAt.Add(5 * time.Second)})

	// The sends the namespace replica's devices first made during the cut.
	// (Devices do not move in this test: a device's replica now is the
	// one it sent on.)
	l.mu.Lock()
	var refused, ackedNS, ackedHost, firstRefusal int
	var firstRefusedAt time.Time
	for cmid, f := range l.failed {
		r := l.sent[cmid]
		if f.code == "unavailable" && r != nil && r.first.After(cutAt) && r.first.Before(healAt) {
			refused++
			if firstRefusedAt.IsZero() || f.at.Before(firstRefusedAt) {
				firstRefusedAt = f.at
			}
		}
	}
	var during []*device
	for _, a := range l.acked {
		if a.at.After(cutAt.Add(500*time.Millisecond)) && a.at.Before(healAt) {
			during = append(during, a.dev)
		}
	}
	l.mu.Unlock()
	for _, d := range during {
		if r, _ := d.currentReplica(); r == inNS.Name() {
			ackedNS++
		} else {
			ackedHost++
		}
	}
	if !firstRefusedAt.IsZero() {
		firstRefusal = int(firstRefusedAt.Sub(cutAt).Milliseconds())
	}
	if refused == 0 {
		t.Errorf("no send was refused with unavailable during the cut (%d devices on the namespace replica)", onNS)
	}
	if restCode != 503 || !strings.Contains(restBody, `unavailable`) {
		t.Errorf("REST send to the namespace replica during the cut: got %d %s, want 503 with code unavailable", restCode, restBody)
	}
	if notReadyErr != nil {
		t.Errorf("/readyz on the namespace replica: %v", notReadyErr)
	}
	report(t, "net-postgres-cut", start, res,
		"Postgres link of the namespace replica down "+secs(pgCut)+" (ip link set down: packets dropped, no RST)",
		fmt.Sprintf("%d sends to it refused with unavailable (the first %.2fs after the cut), none stored; acked during the cut: %d on the host replica, %d on the namespace replica", refused, float64(firstRefusal)/1000, ackedHost, ackedNS),
		fmt.Sprintf("REST send to it during the cut: %d in %s", restCode, secs(restAfter)),
		"its /readyz 503 "+notReady+" after the cut, every replica 200 again "+secs(readyAgain)+" after the link came back",
		"recovery "+secs(recovery)+" after the cut",
		c.NginxStats())
	res.check(t)
}

// waitFor503 polls r's /readyz until it answers 503, at most d.
func waitFor503(r *testkit.Replica, d time.Duration) (string, error) {
	start := time.Now()
	for {
		code, _, err := testkit.Get(context.Background(), r.URL+"/readyz")
		if err == nil && code == 503 {
			return secs(time.Since(start)), nil
		}
		if time.Since(start) > d {
			return "never", fmt.Errorf("not 503 within %s (last %d %v)", d, code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNetSlowLinks slows both of the namespace replica's links through
// toxiproxy (latency 40 ms ± 20 ms on every chunk, each way) for 10 s
// while every device sends: everything acked still reaches every
// connection once and in order, only later.
func TestNetSlowLinks(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	lab := startNetLab(t)
	c := netCluster(t, lab)
	l := newLoad(t, c, loadOptions{})
	l.spread(t, 2)
	l.start()
	time.Sleep(2 * time.Second)

	slowAt := l.markFault()
	const toxic = `{"name":"slow_%s","type":"latency","stream":"%s","attributes":{"latency":40,"jitter":20}}`
	for _, p := range []*toxiproxy.Proxy{lab.redis, lab.pg} {
		for _, dir := range []string{"upstream", "downstream"} {
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(toxic, dir, dir))); err != nil {
				t.Fatalf("toxic on %s: %v", p.Name, err)
			}
		}
	}
	sleepUntil(slowAt.Add(10 * time.Second))
	slowEnd := time.Now()
	for _, p := range []*toxiproxy.Proxy{lab.redis, lab.pg} {
		for _, dir := range []string{"upstream", "downstream"} {
			if err := p.Toxics.RemoveToxic(context.Background(), "slow_"+dir); err != nil {
				t.Errorf("remove toxic from %s: %v", p.Name, err)
			}
		}
	}
	fastAt := time.Now()
	res, recovery := l.finish(t, ending{recoverWithin: 30 * time.Second, sendUntil: fastAt.Add(3 * time.Second)})
	// Send-to-ack times of what was sent while slowed, per replica.
	l.mu.Lock()
	lat := map[*device][]time.Duration{}
	for cmid, a := range l.acked {
		if r := l.sent[cmid]; r != nil && r.first.After(slowAt) && r.first.Before(slowEnd) {
			lat[a.dev] = append(lat[a.dev], a.at.Sub(r.first))
		}
	}
	l.mu.Unlock()
	byReplica := map[string][]time.Duration{}
	for d, ds := range lat {
		name := "host replica"
		if r, _ := d.currentReplica(); r == c.Replicas[1].Name() {
			name = "namespace replica"
		}
		byReplica[name] = append(byReplica[name], ds...)
	}
	var acks []string
	for _, name := range []string{"host replica", "namespace replica"} {
		ds := byReplica[name]
		slices.Sort(ds)
		if len(ds) == 0 {
			acks = append(acks, name+": none acked")
			t.Errorf("no send through the %s was acked while the links were slow", name)
			continue
		}
		acks = append(acks, fmt.Sprintf("%s: %d acked, send to ack p50 %s max %s", name, len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond)))
	}
	report(t, "net-slow-links", start, res,
		"both links of the namespace replica slowed 10.00s (toxiproxy latency 40ms ± 20ms per chunk, each way)",
		"sent while slowed: "+strings.Join(acks, ", "),
		"recovery "+secs(recovery)+" after the slowdown began",
		c.NginxStats())
	res.check(t)
}
