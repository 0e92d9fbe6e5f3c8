package client

import (
	"math/rand/v2"
	"time"
)

// Backoff returns how long to wait before reconnect attempt n (1, 2, 3…
// since the last connection that stayed up).
type Backoff func(attempt int) time.Duration

// ExponentialBackoff doubles the wait from min up to max and picks a
// random point in the upper half of it ("equal jitter"), so clients that
// lost the same replica do not come back in step, yet none comes back at
// once in a tight loop.
func ExponentialBackoff(min, max time.Duration) Backoff {
	return func(attempt int) time.Duration {
		d := max
		if attempt < 1 {
			attempt = 1
		}
		if attempt < 32 {
			if e := min << (attempt - 1); e > 0 && e < max {
				d = e
			}
		}
		half := d / 2
		return half + rand.N(half+1)
	}
}

// DefaultBackoff waits 0.25–0.5 s before the first retry, doubling to at
// most 15 s (7.5–15 s).
var DefaultBackoff = ExponentialBackoff(500*time.Millisecond, 15*time.Second)

// Clock is the time a Conn uses for its waits (backoff, gap and retry
// timers, the idle check); tests replace it with a fake one.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is a Clock's timer.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the real time.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer returns a time.Timer.
func (SystemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }
