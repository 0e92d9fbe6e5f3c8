package broker_test

import (
	"context"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/realtime/broker"
)

// blackhole is a TCP proxy that can turn the connections it carries into
// half-open ones: after Freeze, what either side sends is read and thrown
// away, nothing is forwarded and nothing is closed, as when a NAT or
// firewall on the way forgets a connection. Connections made after Freeze
// work normally.
type blackhole struct {
	ln     net.Listener
	target string

	mu     sync.Mutex // guards links and closed
	links  []*link    // every connection, frozen or not
	closed bool
	wg     sync.WaitGroup
}

type link struct {
	client, server net.Conn
	frozen         atomic.Bool
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackhole{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *blackhole) addr() string { return p.ln.Addr().String() }

func (p *blackhole) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		l := &link{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			return
		}
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(l, c, s)
		go p.pipe(l, s, c)
	}
}

// pipe copies src to dst until either side closes, or only reads once the
// link is frozen.
func (p *blackhole) pipe(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if !l.frozen.Load() {
				// Pass a close on, as a real link would.
				_ = dst.Close()
				_ = src.Close()
			}
			return
		}
	}
}

// freeze makes every current connection half-open; it returns how many
// it froze.
func (p *blackhole) freeze() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.links {
		if !l.frozen.Swap(true) {
			n++
		}
	}
	return n
}

func (p *blackhole) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for _, l := range p.links {
		_ = l.client.Close()
		_ = l.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestRedisSilentConnection puts a proxy between the broker and Redis and
// makes the broker's connections silently stop carrying anything: no
// error, no RST. The broker must notice within its SilenceTimeout, report
// the channels resubscribed, and deliver again on a new connection.
func TestRedisSilentConnection(t *testing.T) {
	for _, silence := range []time.Duration{0, time.Second} { // 0: the default, 3s
		name := "default"
		if silence > 0 {
			name = silence.String()
		}
		t.Run(name, func(t *testing.T) {
			admin := redisAdmin(t)
			prefix := randomPrefix(t)
			t.Cleanup(func() { cleanPrefix(t, admin, prefix) })
			u, err := url.Parse(redisURL())
			if err != nil {
				t.Fatal(err)
			}
			proxy := newBlackhole(t, u.Host)
			u.Host = proxy.addr()

			opts := broker.Options{Prefix: prefix, SilenceTimeout: silence}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			sub, err := broker.NewRedis(ctx, withClientName(u.String(), strings.TrimSuffix(prefix, ":")), opts)
			if err != nil {
				t.Fatalf("NewRedis through the proxy: %v", err)
			}
			t.Cleanup(func() { _ = sub.Close() })
			pub := newRedisBroker(t, admin, prefix, broker.Options{}) // not through the proxy
			h := newRecorder()
			sub.Start(h)
			channels := []string{"chat:1", "user:2", "session:3"}
			for _, c := range channels {
				mustSubscribe(t, sub, c)
			}
			for _, c := range channels {
				mustPublish(t, pub, c, "before")
				h.waitFor(t, c, 1)
			}

			bound := silence
			if bound == 0 {
				bound = 3 * time.Second
			}
			frozen := proxy.freeze()
			start := time.Now()
			// Published into the void: the subscription connection is dead.
			mustPublish(t, pub, "chat:1", "lost")
			if !h.waitUntil(bound+2*time.Second, func() bool { return len(h.resubs) > 0 }) {
				t.Fatalf("Resubscribed not called within %v of the connection going silent", bound+2*time.Second)
			}
			took := time.Since(start)
			t.Logf("SilenceTimeout %v: %d connections went silent; Resubscribed after %v", bound, frozen, took.Round(time.Millisecond))
			// The ping goes every bound/3, so the last answer came at most
			// that long before the freeze.
			if took < bound*2/3-100*time.Millisecond || took > bound+time.Second {
				t.Errorf("Resubscribed after %v, want between %v and %v", took, bound*2/3, bound+time.Second)
			}
			got := h.waitResubscribed(t, time.Second)
			slices.Sort(got)
			if want := []string{"chat:1", "session:3", "user:2"}; !slices.Equal(got, want) {
				t.Errorf("Resubscribed: got %v, want %v", got, want)
			}
			for _, c := range channels {
				mustPublish(t, pub, c, "after")
			}
			if got := h.waitFor(t, "chat:1", 2); !slices.Equal(got, []string{"before", "after"}) {
				t.Errorf("chat:1: got %v, want [before after] (lost is lost)", got)
			}
			h.waitFor(t, "user:2", 2)
			h.waitFor(t, "session:3", 2)
		})
	}
}
