package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var cheapParams = Argon2Params{Memory: 64, Time: 1, Threads: 1}

// TestHasherBoundsConcurrency runs many hashes and checks at once through a
// Hasher with two slots: never more than two computations run at the same
// time, and every caller is served (the wait is long enough).
func TestHasherBoundsConcurrency(t *testing.T) {
	h := NewHasher(cheapParams, 2, 10*time.Second)
	var running, peak atomic.Int32
	track := func() func() {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond) // long enough for callers to pile up
		return func() { running.Add(-1) }
	}
	h.hash = func(pw string, p Argon2Params) (string, error) {
		defer track()()
		return HashPassword(pw, p)
	}
	h.check = func(hash, pw string) bool {
		defer track()()
		return CheckPassword(hash, pw)
	}
	stored, err := HashPassword("correct horse", cheapParams)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failures atomic.Int32
	for i := range 40 {
		wg.Go(func() {
			if i%2 == 0 {
				if _, err := h.Hash(context.Background(), "pw"); err != nil {
					failures.Add(1)
				}
				return
			}
			if ok, err := h.Check(context.Background(), stored, "correct horse"); err != nil || !ok {
				failures.Add(1)
			}
		})
	}
	wg.Wait()
	if got := peak.Load(); got != 2 {
		t.Errorf("got at most %d computations at once, want exactly 2 (the slots)", got)
	}
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of 40 callers failed, want 0 (each waits up to 10 s)", n)
	}
}

// TestHasherBusy holds every slot: a caller waits for the configured time,
// then gets ErrBusy without computing anything; once a slot frees, it is
// served again. A caller whose context ends gets the context's error.
func TestHasherBusy(t *testing.T) {
	h := NewHasher(cheapParams, 1, 50*time.Millisecond)
	computed := 0
	h.hash = func(pw string, p Argon2Params) (string, error) { computed++; return HashPassword(pw, p) }
	if err := h.sem.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := h.Hash(context.Background(), "pw")
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want ErrBusy while the only slot is taken", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Errorf("gave up after %v, want the 50ms wait first", waited)
	}
	if _, err := h.Check(context.Background(), "x", "pw"); !errors.Is(err, ErrBusy) {
		t.Errorf("Check: got %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(ctx, "pw"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: got %v, want context.Canceled", err)
	}
	if computed != 0 {
		t.Errorf("%d hashes computed while busy, want 0", computed)
	}
	h.sem.Release(1)
	if _, err := h.Hash(context.Background(), "pw"); err != nil || computed != 1 {
		t.Errorf("after the slot freed: got %v with %d computed, want a hash", err, computed)
	}
}

func TestHasherDefaults(t *testing.T) {
	h := NewHasher(cheapParams, 0, 0)
	if h.Slots() < 1 || h.wait != DefaultHashWait || h.Params() != cheapParams {
		t.Errorf("got slots %d wait %v params %+v, want GOMAXPROCS, %v and the given params", h.Slots(), h.wait, h.Params(), DefaultHashWait)
	}
}
