package e2e

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The proxy template and the two placeholders it may contain; anything else
// that looks like an environment variable would be substituted by the
// nginx image's entrypoint too.
const (
	templateFile = "deploy/nginx/windi.conf.template"
	upstreamVar  = "WINDI_UPSTREAM_SERVERS"
	proxyPortVar = "WINDI_PROXY_PORT"
)

// composeFile is the part of docker-compose.yml the checks read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	Environment composeEnv     `yaml:"environment"`
	Volumes     []any          `yaml:"volumes"`
	Ports       []any          `yaml:"ports"`
	DependsOn   composeDepends `yaml:"depends_on"`
	Healthcheck *struct {
		Test any `yaml:"test"`
	} `yaml:"healthcheck"`
}

// composeEnv is `environment:` as a map or as a list of NAME=value.
type composeEnv map[string]string

func (e *composeEnv) UnmarshalYAML(n *yaml.Node) error {
	*e = composeEnv{}
	switch n.Kind {
	case yaml.MappingNode:
		var m map[string]*string
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			if v != nil {
				(*e)[k] = *v
			}
		}
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			(*e)[k] = v
		}
	default:
		return fmt.Errorf("line %d: environment is neither a map nor a list", n.Line)
	}
	return nil
}

// composeDepends is `depends_on:` as a list (condition service_started)
// or a map with conditions.
type composeDepends map[string]string

func (d *composeDepends) UnmarshalYAML(n *yaml.Node) error {
	*d = composeDepends{}
	switch n.Kind {
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, s := range l {
			(*d)[s] = "service_started"
		}
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			(*d)[k] = orDefault(v.Condition, "service_started")
		}
	default:
		return fmt.Errorf("line %d: depends_on is neither a list nor a map", n.Line)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// interpolate applies Compose's ${VAR:-default}, ${VAR-default} and
// ${VAR} with no variable set (what a fresh checkout gets) and $$ escapes;
// a required ${VAR:?message} becomes "" (Compose would stop with the
// message).
var composeVar = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*)|:\?[^}]*)?\}`)

func interpolate(s string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		return composeVar.FindStringSubmatch(m)[2]
	})
}

// requiredVar is Compose's ${JWT_SECRET:?message}: no default, a clear
// message when unset.
var requiredVar = regexp.MustCompile(`^\$\{JWT_SECRET:\?[^}]+\}$`)

// upstreamServer matches one "server host:port [params];" of the upstream.
var upstreamServer = regexp.MustCompile(`server\s+([^\s;]+)[^;]*;`)

// TestComposeFile checks docker-compose.yml without Docker: the services
// SPEC §1 names, replicas that can share work, and an nginx whose upstream
// list and mounted template match them. `.ci/run compose_config` runs it
// (beside `docker compose config -q` where Docker is installed).
func TestComposeFile(t *testing.T) {
	root := ".."
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"postgres", "redis", "nginx"} {
		if _, ok := f.Services[name]; !ok {
			t.Errorf("docker-compose.yml: no %s service", name)
		}
	}
	env := func(svc, name string) string { return interpolate(f.Services[svc].Environment[name]) }

	// Replicas: the services built from this repository.
	var replicas []string
	for name, s := range f.Services {
		if s.Build != nil {
			replicas = append(replicas, name)
		}
	}
	slices.Sort(replicas)
	if len(replicas) < 2 {
		t.Fatalf("docker-compose.yml: %d windi replicas (services with build:) %v, want at least 2", len(replicas), replicas)
	}
	first := replicas[0]
	port := "8000"
	if addr := env(first, "WINDI_ADDR"); addr != "" {
		_, port, _ = net.SplitHostPort(addr)
	}
	for _, r := range replicas {
		s := f.Services[r]
		for _, v := range []string{"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "WINDI_ADDR"} {
			if env(r, v) != env(first, v) {
				t.Errorf("%s: %s differs from %s's; replicas must share it", r, v, first)
			}
		}
		if s.Image != f.Services[first].Image {
			t.Errorf("%s: image %q differs from %s's %q", r, s.Image, first, f.Services[first].Image)
		}
		// No default secret: a published one lets anyone sign tokens, and
		// the server refuses the old example value anyway.
		if raw := s.Environment["JWT_SECRET"]; !requiredVar.MatchString(raw) {
			t.Errorf("%s: JWT_SECRET is %q, want ${JWT_SECRET:?…} (required, no default)", r, raw)
		}
		for v, svc := range map[string]string{"DATABASE_URL": "postgres", "REDIS_URL": "redis"} {
			u, err := url.Parse(env(r, v))
			if err != nil || u.Hostname() != svc {
				t.Errorf("%s: %s = %q, want a URL whose host is the %s service", r, v, env(r, v), svc)
			}
			if s.DependsOn[svc] != "service_healthy" {
				t.Errorf("%s: depends_on %s is %q, want condition service_healthy", r, svc, s.DependsOn[svc])
			}
		}
		if s.Healthcheck == nil || !strings.Contains(fmt.Sprint(s.Healthcheck.Test), "/readyz") {
			t.Errorf("%s: want a healthcheck on /readyz", r)
		}
	}

	// nginx: the upstream lists every replica, once, on the port it serves.
	ngx := f.Services["nginx"]
	upstream := env("nginx", upstreamVar)
	listed := map[string]int{}
	for _, m := range upstreamServer.FindAllStringSubmatch(upstream, -1) {
		host, p, err := net.SplitHostPort(m[1])
		if err != nil {
			t.Errorf("nginx: %s entry %q is not host:port", upstreamVar, m[0])
			continue
		}
		if !slices.Contains(replicas, host) {
			t.Errorf("nginx: %s names %q, which is not a windi replica service (%v)", upstreamVar, host, replicas)
		}
		if p != port {
			t.Errorf("nginx: %s sends to %s on port %s; the replicas listen on %s", upstreamVar, host, p, port)
		}
		listed[host]++
	}
	for _, r := range replicas {
		if listed[r] != 1 {
			t.Errorf("nginx: replica %s appears %d times in %s %q, want once (add \"server %s:%s;\")", r, listed[r], upstreamVar, upstream, r, port)
		}
		if ngx.DependsOn[r] != "service_healthy" {
			t.Errorf("nginx: depends_on %s is %q, want condition service_healthy (nginx resolves the upstream names when it starts)", r, ngx.DependsOn[r])
		}
	}
	proxyPort := env("nginx", proxyPortVar)
	if proxyPort == "" {
		t.Errorf("nginx: %s is not set", proxyPortVar)
	}
	published := false
	for _, p := range ngx.Ports {
		s := interpolate(fmt.Sprint(p))
		if strings.HasSuffix(s, ":"+proxyPort) || strings.HasSuffix(s, ":"+proxyPort+"/tcp") {
			published = true
		}
	}
	if !published {
		t.Errorf("nginx: no published port maps to %s=%s (ports %v)", proxyPortVar, proxyPort, ngx.Ports)
	}

	// The template is mounted where the image renders templates, and it
	// exists.
	mounted := false
	for _, v := range ngx.Volumes {
		src, dst := volumeEnds(v)
		if path.Clean(src) != templateFile {
			continue
		}
		mounted = true
		if dir, file := path.Split(dst); dir != "/etc/nginx/templates/" || !strings.HasSuffix(file, ".template") {
			t.Errorf("nginx: %s is mounted at %s; the image renders only /etc/nginx/templates/*.template", src, dst)
		}
	}
	if !mounted {
		t.Errorf("nginx: %s is not mounted (volumes %v)", templateFile, ngx.Volumes)
	}
	tmpl, err := os.ReadFile(filepath.Join(root, templateFile))
	if err != nil {
		t.Fatal(err)
	}
	checkTemplate(t, string(tmpl), ngx.Environment)

	t.Logf("docker-compose.yml: services %v; replicas %v behind nginx (%s=%q, %s=%s); template %s",
		keysOf(f.Services), replicas, upstreamVar, upstream, proxyPortVar, proxyPort, templateFile)
}

// envRef finds what envsubst would treat as a variable: $NAME or ${NAME}.
var envRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// checkTemplate checks that rendering the template the way the nginx image
// does (every variable of the container's environment) and the way .ci/run
// does (only the two placeholders) gives the same result: the placeholders
// appear as ${NAME}, and no nginx variable shares a name with an
// environment variable of the container or with an upper-case name (the
// image sets NGINX_VERSION, PATH, HOME and the like).
func checkTemplate(t *testing.T, tmpl string, env composeEnv) {
	t.Helper()
	for _, v := range []string{upstreamVar, proxyPortVar} {
		if !strings.Contains(tmpl, "${"+v+"}") {
			t.Errorf("%s: no ${%s} placeholder", templateFile, v)
		}
	}
	for _, m := range envRef.FindAllStringSubmatch(tmpl, -1) {
		name := m[1]
		if name == upstreamVar || name == proxyPortVar {
			if !strings.HasPrefix(m[0], "${") || !strings.HasSuffix(m[0], "}") {
				t.Errorf("%s: write %q as ${%s}", templateFile, m[0], name)
			}
			continue
		}
		if _, ok := env[name]; ok || strings.ToUpper(name) == name {
			t.Errorf("%s: %q would be replaced by the nginx image's envsubst; only ${%s} and ${%s} may be", templateFile, m[0], upstreamVar, proxyPortVar)
		}
	}
	if !strings.Contains(tmpl, "$http_upgrade") || !strings.Contains(tmpl, "proxy_http_version 1.1") {
		t.Errorf("%s: does not forward WebSocket upgrades ($http_upgrade, proxy_http_version 1.1)", templateFile)
	}
}

// volumeEnds returns the source and target of a short ("src:dst[:ro]") or
// long (type: bind, source, target) volume entry.
func volumeEnds(v any) (src, dst string) {
	switch v := v.(type) {
	case string:
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			return parts[0], parts[1]
		}
	case map[string]any:
		s, _ := v["source"].(string)
		d, _ := v["target"].(string)
		return s, d
	}
	return "", ""
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
