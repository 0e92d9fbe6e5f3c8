package auth

import (
	"context"
	"errors"
	"runtime"
	"time"

	"golang.org/x/sync/semaphore"
)

// ErrBusy reports that every hashing slot stayed taken for the whole wait:
// the caller should answer "unavailable, retry shortly" instead of piling
// up more hashes.
var ErrBusy = errors.New("password hashing is at capacity")

// DefaultHashWait is how long a hash waits for a free slot by default.
const DefaultHashWait = 2 * time.Second

// Hasher runs argon2id hashes and checks, at most a fixed number at a time.
//
// Each argon2id computation allocates its whole memory cost (Argon2Params
// .Memory KiB, 19 MiB by default) for as long as it runs, and takes one core
// for tens of milliseconds. Without a bound, every concurrent /register or
// /login holds that much at once: a few hundred anonymous requests are
// gigabytes. With the bound, memory is at most slots × Memory plus what the
// garbage collector has not yet returned, and extra callers only wait (a
// goroutine each), or give up with ErrBusy after the wait.
//
// The bound is a weighted semaphore from golang.org/x/sync, whose Acquire
// honours a context (the wait, or the request going away).
type Hasher struct {
	params Argon2Params
	sem    *semaphore.Weighted
	slots  int
	wait   time.Duration
	// hash and check are HashPassword and CheckPassword; tests in this
	// package replace them to observe how many run at once.
	hash  func(password string, p Argon2Params) (string, error)
	check func(hash, password string) bool
}

// NewHasher returns a Hasher that hashes new passwords with p, runs at most
// slots computations at once (slots < 1 means GOMAXPROCS: a computation
// keeps a core busy, so more at once only adds memory, not throughput), and
// lets a caller wait up to wait for a slot (wait <= 0 means
// DefaultHashWait).
func NewHasher(p Argon2Params, slots int, wait time.Duration) *Hasher {
	if slots < 1 {
		slots = runtime.GOMAXPROCS(0)
	}
	if wait <= 0 {
		wait = DefaultHashWait
	}
	return &Hasher{params: p, sem: semaphore.NewWeighted(int64(slots)), slots: slots, wait: wait,
		hash: HashPassword, check: CheckPassword}
}

// Slots is how many hashes may run at once.
func (h *Hasher) Slots() int { return h.slots }

// Params are the cost parameters of new hashes.
func (h *Hasher) Params() Argon2Params { return h.params }

// Hash returns a PHC-formatted argon2id hash of password, or ErrBusy when
// no slot freed up in time (or ctx's error when it ended first).
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.sem.Release(1)
	return h.hash(password, h.params)
}

// Check reports whether password matches hash, or fails with ErrBusy (or
// ctx's error) without computing anything.
func (h *Hasher) Check(ctx context.Context, hash, password string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.sem.Release(1)
	return h.check(hash, password), nil
}

func (h *Hasher) acquire(ctx context.Context) error {
	if h.sem.TryAcquire(1) {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, h.wait)
	defer cancel()
	if err := h.sem.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrBusy
	}
	return nil
}
