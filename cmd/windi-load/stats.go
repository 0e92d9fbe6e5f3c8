package main

import (
	"math"
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in microseconds: exact below 64µs,
// then 32 buckets per power of two (under 3% wide), with the exact max.
// One goroutine owns each; merge them at the end.
type hist struct {
	counts []uint32
	n      int64
	sum    int64 // µs
	max    int64 // µs
}

const histSub = 5 // 2^5 sub-buckets per octave

func histIndex(us int64) int {
	if us < 2<<histSub {
		return int(max(us, 0))
	}
	shift := bits.Len64(uint64(us)) - histSub - 1 // ≥ 1
	return 2<<histSub + (shift-1)<<histSub + int(us>>shift) - 1<<histSub
}

// histValue returns the middle of bucket i in µs.
func histValue(i int) float64 {
	if i < 2<<histSub {
		return float64(i)
	}
	j := i - 2<<histSub
	shift := j>>histSub + 1
	lo := int64(j&(1<<histSub-1)+1<<histSub) << shift
	return float64(lo) + float64(int64(1)<<shift)/2
}

func (h *hist) record(d time.Duration) {
	us := d.Microseconds()
	us = max(us, 0)
	i := histIndex(us)
	if i >= len(h.counts) {
		n := max(i+1, 2*len(h.counts), 256)
		c := make([]uint32, n)
		copy(c, h.counts)
		h.counts = c
	}
	h.counts[i]++
	h.n++
	h.sum += us
	h.max = max(h.max, us)
}

func (h *hist) merge(o *hist) {
	if o == nil || o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		c := make([]uint32, len(o.counts))
		copy(c, h.counts)
		h.counts = c
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in µs (0 when empty).
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var acc int64
	for i, c := range h.counts {
		acc += int64(c)
		if acc >= rank {
			return min(histValue(i), float64(h.max))
		}
	}
	return float64(h.max)
}

// Percentiles are latency figures in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func (h *hist) percentiles() Percentiles {
	if h.n == 0 {
		return Percentiles{}
	}
	ms := func(us float64) float64 { return math.Round(us) / 1000 }
	return Percentiles{
		Count: h.n,
		Mean:  ms(float64(h.sum) / float64(h.n)),
		P50:   ms(h.quantile(0.50)),
		P95:   ms(h.quantile(0.95)),
		P99:   ms(h.quantile(0.99)),
		Max:   ms(float64(h.max)),
	}
}
