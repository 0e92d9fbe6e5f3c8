package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/testkit"
)

// sample is one reading of a replica's resource metrics.
type sample struct {
	goroutines, fds, rss, heap, conns float64
}

func (s sample) String() string {
	return fmt.Sprintf("goroutines %.0f, open fds %.0f, RSS %.1f MiB, heap in use %.1f MiB, connections %.0f",
		s.goroutines, s.fds, s.rss/(1<<20), s.heap/(1<<20), s.conns)
}

// readSample scrapes the replica's /metrics (go_goroutines,
// process_open_fds, process_resident_memory_bytes,
// go_memstats_heap_inuse_bytes, windi_ws_connections). With gc, it first
// has the server collect garbage (GET /debug/pprof/heap?gc=1 on
// its pprof listener, testkit.Options.Pprof).
func readSample(r *testkit.Replica, gc bool) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if gc && r.PprofURL != "" {
		if _, err := scrape(ctx, r.PprofURL+"/debug/pprof/heap?gc=1"); err != nil {
			return sample{}, err
		}
	}
	text, err := scrape(ctx, r.URL+"/metrics")
	if err != nil {
		return sample{}, err
	}
	var s sample
	var ok [5]bool
	s.goroutines, ok[0] = metricValue(text, "go_goroutines")
	s.fds, ok[1] = metricValue(text, "process_open_fds")
	s.rss, ok[2] = metricValue(text, "process_resident_memory_bytes")
	s.heap, ok[3] = metricValue(text, "go_memstats_heap_inuse_bytes")
	s.conns, ok[4] = metricValue(text, "windi_ws_connections")
	for i, o := range ok {
		if !o {
			return s, fmt.Errorf("/metrics lacks metric %d of goroutines, fds, rss, heap, connections", i)
		}
	}
	return s, nil
}

// TestSoak churns WebSocket connections against one replica for
// WINDI_SOAK_SECONDS (default 20; `make soak` runs 600): workers connect
// (alternately to /ws and /ws/{chat_id}), send three messages, wait for
// their acks and leave (a normal close, or an abrupt one without a close
// frame, or right after connecting), over and over, while the usual eight
// devices stay connected, send, and check every delivery. Afterwards the
// replica's goroutines, open files and memory must come back to where
// they were before the churn, within a tolerance, and every message must
// be in history once and have reached every device once, in order.
func TestSoak(t *testing.T) {
	requireFaults(t)
	dur := 20 * time.Second
	if v := os.Getenv("WINDI_SOAK_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("WINDI_SOAK_SECONDS=%q: want a positive number of seconds", v)
		}
		dur = time.Duration(n) * time.Second
	}
	start := time.Now()
	c := startCluster(t, testkit.Options{Replicas: 1, Pprof: true})
	rep := c.Replicas[0]
	l := newLoad(t, c, loadOptions{interval: 250 * time.Millisecond})
	l.start()

	const workers = 8
	var (
		opened, sends, acked atomic.Int64
		errMu                sync.Mutex
		churnErrs            []string
	)
	churnErr := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(churnErrs) < 20 {
			churnErrs = append(churnErrs, fmt.Sprintf(format, args...))
		}
	}
	// A churning client: a raw client.Socket (no reconnect, no resume)
	// with a pseudo-device of its own, so that its sends are checked
	// against history like the others (it receives, but does not check,
	// deliveries).
	var rounds [workers]int // per worker, across runs: client_msg_ids stay unique
	churn := func(w int, until time.Time) {
		u := l.users[w%len(l.users)]
		d := newDevice(l, 200+w, fmt.Sprintf("churn%d", w), u, 0, nil)
		for ; time.Now().Before(until); rounds[w]++ {
			i := rounds[w]
			path := fmt.Sprintf("/ws/%d", l.group)
			if i%2 == 1 {
				path = "/ws"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			sock, _, err := u.c.DialSocket(ctx, path, client.SocketOptions{})
			if err != nil {
				cancel()
				churnErr("churn%d: dial %s: %v", w, path, err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			opened.Add(1)
			acks := make(chan rest.MessageAckFrame, 16)
			go func() {
				for {
					f, err := sock.Read(context.Background())
					if err != nil && f.Raw == nil {
						close(acks)
						return
					}
					switch v := f.Value.(type) {
					case rest.MessageAckFrame:
						l.recordAck(d, v)
						acks <- v
					case rest.ErrorFrame:
						churnErr("churn%d: %s", w, f.Raw)
					}
				}
			}()
			n := 3
			if i%4 == 3 {
				n = 0 // connect and leave at once
			}
			for k := range n {
				d.mu.Lock()
				r := d.newSendLocked(fmt.Sprintf("%s-churn%d-%d-%d", l.run, w, i, k), l.group)
				d.mu.Unlock()
				sends.Add(1)
				chat := r.chat
				if err := sock.Write(ctx, rest.MessageSendFrame{Type: rest.MessageSend, ChatID: &chat, ClientMsgID: r.cmid, Text: r.text}); err != nil {
					churnErr("churn%d: write: %v", w, err)
				}
			}
			for got := 0; got < n; {
				select {
				case _, ok := <-acks:
					if !ok {
						churnErr("churn%d: connection ended with %d of %d acks", w, got, n)
						got = n
						continue
					}
					got++
					acked.Add(1)
				case <-ctx.Done():
					churnErr("churn%d: %d of %d acks within 10 s", w, got, n)
					got = n
				}
			}
			d.mu.Lock()
			d.outstanding = map[string]*sendRec{} // answered (or reported above)
			d.mu.Unlock()
			if i%4 == 2 {
				_ = sock.CloseNow() // gone without a close frame
			} else {
				_ = sock.Close(1000, "bye")
			}
			cancel()
		}
	}
	runChurn := func(d time.Duration) {
		until := time.Now().Add(d)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() { churn(w, until) })
		}
		wg.Wait()
	}
	// settle waits until only the devices' connections are open and the
	// goroutine count stops falling.
	settle := func() (sample, error) {
		var s sample
		var err error
		deadline := time.Now().Add(30 * time.Second)
		prev := -1.0
		for time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			if s, err = readSample(rep, true); err != nil {
				continue
			}
			if s.conns == float64(len(l.devices)) && s.goroutines == prev {
				return s, nil
			}
			prev = s.goroutines
		}
		if err == nil {
			err = fmt.Errorf("not settled within 30 s: %s", s)
		}
		return s, err
	}

	// Warm up (pools, buffers), then the baseline.
	pid, port := rep.PID(), rep.Port
	runChurn(3 * time.Second)
	base, err := settle()
	if err != nil {
		t.Fatal(err)
	}
	baseFDs := fdKinds(pid, port)
	saveHeapProfile(t, rep, "soak-heap-before.pb.gz")

	// The churn, with the peak sampled every second.
	var peak sample
	var peakMu sync.Mutex
	sampling := make(chan struct{})
	var samplerDone sync.WaitGroup
	samplerDone.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-sampling:
				return
			case <-tick.C:
			}
			if s, err := readSample(rep, false); err == nil {
				peakMu.Lock()
				peak = sample{max(peak.goroutines, s.goroutines), max(peak.fds, s.fds), max(peak.rss, s.rss), max(peak.heap, s.heap), max(peak.conns, s.conns)}
				peakMu.Unlock()
			}
		}
	})
	churnStart := time.Now()
	opened.Store(0)
	sends.Store(0)
	acked.Store(0)
	runChurn(dur)
	churnTook := time.Since(churnStart)
	close(sampling)
	samplerDone.Wait()

	after, err := settle()
	if err != nil {
		t.Error(err)
	}
	afterFDs := fdKinds(pid, port)
	saveHeapProfile(t, rep, "soak-heap-after.pb.gz")
	// Tolerances: a few goroutines; open files other than the pooled
	// connections to Postgres and Redis (bounded pools that may hold a few
	// more idle connections after a busy spell) within 3; memory within
	// 64 MiB and half again of the baseline (the Go runtime returns memory
	// to the OS lazily).
	if after.goroutines > base.goroutines+10 {
		t.Errorf("goroutines: %.0f after the churn, %.0f before (tolerance +10)", after.goroutines, base.goroutines)
	}
	unpooled := func(k map[string]int) int { return k["total"] - k["postgres"] - k["redis"] }
	if unpooled(afterFDs) > unpooled(baseFDs)+3 {
		t.Errorf("open files other than pooled Postgres/Redis connections: %d after the churn, %d before (tolerance +3): before %v, after %v",
			unpooled(afterFDs), unpooled(baseFDs), baseFDs, afterFDs)
	}
	if after.rss > base.rss*1.5+64<<20 {
		t.Errorf("RSS: %.1f MiB after the churn, %.1f MiB before (tolerance ×1.5 + 64 MiB)", after.rss/(1<<20), base.rss/(1<<20))
	}
	// The heap grows by up to ~30 MiB that is not a leak: pgx caches a
	// prepared statement per distinct SQL text (512 per connection, up to
	// 32 connections) and bun inlines values, so nearly every query is
	// new (see RELIABILITY.md).
	if after.heap > base.heap*1.5+40<<20 {
		t.Errorf("heap in use after GC: %.1f MiB after the churn, %.1f MiB before (tolerance ×1.5 + 40 MiB)", after.heap/(1<<20), base.heap/(1<<20))
	}
	errMu.Lock()
	for _, e := range churnErrs {
		t.Error(e)
	}
	errMu.Unlock()

	res, _ := l.finish(t, ending{})
	report(t, "soak", start, res,
		fmt.Sprintf("churn %s with %d workers: %d connections opened and closed (%.0f/s), %d sends, %d acked",
			secs(churnTook), workers, opened.Load(), float64(opened.Load())/churnTook.Seconds(), sends.Load(), acked.Load()),
		"before: "+base.String()+" "+fmtCounts(baseFDs),
		"peak: "+peak.String(),
		"after: "+after.String()+" "+fmtCounts(afterFDs))
	res.check(t)
}

// fdKinds sorts the open files of process pid (a server on port): its TCP
// connections by peer (postgres, redis, clients), listeners, and the rest.
func fdKinds(pid, port int) map[string]int {
	out := map[string]int{}
	socks := map[string]string{} // socket inode -> kind
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fl := strings.Fields(line)
			if len(fl) < 10 {
				continue
			}
			kind := "tcp"
			switch lport, rport := hexPort(fl[1]), hexPort(fl[2]); {
			case fl[3] == "0A":
				kind = "listen"
			case rport == testkit.PostgresPort():
				kind = "postgres"
			case rport == testkit.RedisPort():
				kind = "redis"
			case lport == port:
				kind = "clients"
			}
			socks[fl[9]] = kind
		}
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return out
	}
	for _, e := range entries {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		out["total"]++
		switch {
		case strings.HasPrefix(target, "socket:["):
			if k, ok := socks[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")]; ok {
				out[k]++
			} else {
				out["socket"]++
			}
		case strings.HasPrefix(target, "anon_inode:"):
			out["anon"]++
		case strings.HasPrefix(target, "pipe:"):
			out["pipe"]++
		default:
			out["file"]++
		}
	}
	return out
}

// hexPort is the port of an address in /proc/net/tcp ("0100007F:1F90").
func hexPort(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseInt(p, 16, 32)
	return int(n)
}

// saveHeapProfile keeps the replica's heap profile (after a GC) in
// WINDI_TEST_LOGS (or WINDI_FAULTS_LOGS), if set: compare the two of a
// soak with
// `go tool pprof -top -diff_base soak-heap-before.pb.gz soak-heap-after.pb.gz`.
func saveHeapProfile(t *testing.T, r *testkit.Replica, name string) {
	dir := os.Getenv("WINDI_TEST_LOGS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := scrape(ctx, r.PprofURL+"/debug/pprof/heap?gc=1")
	if err == nil {
		_ = os.MkdirAll(dir, 0o755)
		err = os.WriteFile(filepath.Join(dir, name), []byte(b), 0o644)
	}
	if err != nil {
		t.Logf("heap profile: %v", err)
	}
}
