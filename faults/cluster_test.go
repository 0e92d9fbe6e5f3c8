package faults

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/windi-chat/windi/testkit"
)

// The deployments are testkit's (replicas of the windi binary on a
// database and Redis key prefix of their own, nginx from the deploy
// template, Postgres and Redis stopped and started); what is here is the
// fault tests' own.

// requireFaults skips unless WINDI_FAULTS=1: these tests stop the
// Postgres and Redis of WINDI_TEST_DATABASE_URL and WINDI_TEST_REDIS_URL
// for seconds at a time.
func requireFaults(t *testing.T) {
	t.Helper()
	if os.Getenv("WINDI_FAULTS") != "1" {
		t.Skip("fault tests start servers and nginx and stop Postgres and Redis: set WINDI_FAULTS=1 (bash .ci/run faults does)")
	}
	if testing.Short() {
		t.Skip("fault tests take minutes")
	}
}

// quietRedis drops go-redis's own log lines (dial failures while the
// tests have Redis stopped on purpose).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietRedis{})
	// The names these tests had before testkit, still set by `make soak`
	// and older scripts.
	for old, name := range map[string]string{"WINDI_FAULTS_BIN": "WINDI_TEST_BIN", "WINDI_FAULTS_LOGS": "WINDI_TEST_LOGS"} {
		if v := os.Getenv(old); v != "" && os.Getenv(name) == "" {
			_ = os.Setenv(name, v)
		}
	}
	code := m.Run()
	testkit.RemoveBinary()
	os.Exit(code)
}

// startCluster starts a deployment for t (testkit.Start, named "faults").
// Postgres and Redis are started again when the test ends if a scenario
// left them down: before the deployment's database is dropped, and once
// more at the very end, whatever failed.
func startCluster(t *testing.T, o testkit.Options) *testkit.Cluster {
	t.Helper()
	ensure := func() {
		if err := testkit.EnsureServices(t.Logf); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(ensure)
	o.Name = "faults"
	c := testkit.Start(t, o)
	t.Cleanup(ensure)
	return c
}

// probe is for the tests' own requests to a replica (metrics, pprof):
// each on a fresh connection, so none lingers on a server being measured
// or killed.
var probe = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: 5 * time.Second}

// scrape returns the body of GET rawURL.
func scrape(ctx context.Context, rawURL string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := probe.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metricValue reads one unlabelled sample from Prometheus text.
func metricValue(text, name string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// repoRoot is the module root.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
