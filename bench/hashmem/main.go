// Command hashmem measures what password hashing costs a real windi
// process: it starts the binary (embedded SQLite, a fresh data directory),
// fires N concurrent registrations or N concurrent logins with unknown
// emails, and reports the answers and the resident memory (RSS) before,
// at the peak (VmHWM) and a while after the burst. Issue 15: each argon2id
// computation holds 19 MiB, so unbounded concurrency is gigabytes.
//
//	go run ./bench/hashmem -bin ./windi                 # both scenarios, default limits
//	go run ./bench/hashmem -bin ./windi -limits off     # limits off: hashing bound alone
//	bench/hashmem.sh                                    # this tree, and BEFORE=<rev> too
//
// Each scenario runs in its own process, so the peak is that scenario's
// alone. Linux only (it reads /proc/<pid>/status). It prints one line per
// scenario and then one JSON line per scenario.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type result struct {
	Label     string         `json:"label"`
	Scenario  string         `json:"scenario"`
	N         int            `json:"n"`
	Limits    string         `json:"limits"`
	Statuses  map[string]int `json:"statuses"`
	Seconds   float64        `json:"seconds"`
	RSSBefore int64          `json:"rss_before_bytes"`
	RSSPeak   int64          `json:"rss_peak_bytes"`
	RSSAfter  int64          `json:"rss_after_bytes"`
	AfterSecs float64        `json:"after_seconds"`
}

func main() {
	bin := flag.String("bin", "", "windi binary to measure (required)")
	n := flag.Int("n", 200, "concurrent requests per scenario")
	scenarios := flag.String("scenarios", "register,login", "comma-separated: register, login")
	limits := flag.String("limits", "default", "default: the binary's default limits; off: every login and registration limit off")
	label := flag.String("label", "", "label printed with the figures (e.g. before, after)")
	hold := flag.Duration("hold", 5*time.Second, "how long after the burst to read RSS again")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "hashmem: -bin is required")
		os.Exit(2)
	}
	var results []result
	for _, sc := range strings.Split(*scenarios, ",") {
		r, err := run(*bin, strings.TrimSpace(sc), *n, *limits, *hold)
		if err != nil {
			fmt.Fprintf(os.Stderr, "hashmem: %s: %v\n", sc, err)
			os.Exit(1)
		}
		r.Label = *label
		results = append(results, r)
		fmt.Printf("hashmem %s %s n=%d limits=%s: %s in %.2fs; RSS before %.1f MiB, peak %.1f MiB (+%.1f), %.0fs after %.1f MiB\n",
			r.Label, r.Scenario, r.N, r.Limits, formatStatuses(r.Statuses), r.Seconds,
			mib(r.RSSBefore), mib(r.RSSPeak), mib(r.RSSPeak-r.RSSBefore), r.AfterSecs, mib(r.RSSAfter))
	}
	for _, r := range results {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func formatStatuses(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// run starts a fresh server and measures one scenario on it.
func run(bin, scenario string, n int, limits string, hold time.Duration) (result, error) {
	r := result{Scenario: scenario, N: n, Limits: limits, Statuses: map[string]int{}}
	dir, err := os.MkdirTemp("", "windi-hashmem-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return r, err
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "WINDI_ADDR="+fmt.Sprintf("127.0.0.1:%d", port), "WINDI_DATA_DIR="+filepath.Join(dir, "data"),
		"WINDI_LOG_LEVEL=warn", "DATABASE_URL=", "REDIS_URL=")
	if limits == "off" {
		cmd.Env = append(cmd.Env, "WINDI_LOGIN_LIMIT_EMAIL=0", "WINDI_LOGIN_LIMIT_IP=0", "WINDI_REGISTER_LIMIT_IP=0")
	}
	logf, err := os.Create(filepath.Join(dir, "windi.log"))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	client := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}}
	if err := waitReady(client, base+"/readyz", 60*time.Second); err != nil {
		return r, err
	}
	time.Sleep(time.Second) // let start-up garbage settle
	pid := cmd.Process.Pid
	if r.RSSBefore, _, err = rss(pid); err != nil {
		return r, err
	}

	req := func(i int) (*http.Request, error) {
		switch scenario {
		case "register":
			body := fmt.Sprintf(`{"name":"Bench %d","email":"bench-%d-%d@example.com","password":"password-%d"}`, i, time.Now().UnixNano(), i, i)
			q, err := http.NewRequest("POST", base+"/register", bytes.NewBufferString(body))
			if q != nil {
				q.Header.Set("Content-Type", "application/json")
			}
			return q, err
		case "login":
			form := url.Values{"username": {fmt.Sprintf("nobody-%d@example.com", i)}, "password": {"wrong-password"}}
			q, err := http.NewRequest("POST", base+"/login", strings.NewReader(form.Encode()))
			if q != nil {
				q.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			return q, err
		}
		return nil, fmt.Errorf("unknown scenario %q (register or login)", scenario)
	}
	reqs := make([]*http.Request, n)
	for i := range reqs {
		if reqs[i], err = req(i); err != nil {
			return r, err
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, q := range reqs {
		wg.Go(func() {
			<-start
			status := "error"
			resp, err := client.Do(q)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = strconv.Itoa(resp.StatusCode)
			}
			mu.Lock()
			r.Statuses[status]++
			mu.Unlock()
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	r.Seconds = time.Since(t0).Seconds()
	time.Sleep(hold)
	r.AfterSecs = hold.Seconds()
	if r.RSSAfter, r.RSSPeak, err = rss(pid); err != nil {
		return r, err
	}
	return r, nil
}

// rss reads the process's resident set size now and at its peak.
func rss(pid int) (now, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			now = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return now, peak, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitReady(c *http.Client, u string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v", u, within)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
