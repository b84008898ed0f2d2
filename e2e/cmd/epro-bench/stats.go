package main

import (
	"math"
	"slices"
	"time"
)

// Latency summarises a set of durations, in milliseconds so that the JSON reads without conversion.
type Latency struct {
	Count int     `json:"count"`
	Mean  float64 `json:"meanMs"`
	P50   float64 `json:"p50Ms"`
	P95   float64 `json:"p95Ms"`
	P99   float64 `json:"p99Ms"`
	P999  float64 `json:"p999Ms"`
	Max   float64 `json:"maxMs"`
	Min   float64 `json:"minMs"`
}

// summarize sorts ns in place. Percentiles are nearest-rank: the smallest value with at least q of the
// samples at or below it, so p99.9 of 1000 samples is the largest but one, never an interpolation.
func summarize(ns []int64) Latency {
	if len(ns) == 0 {
		return Latency{}
	}
	slices.Sort(ns)
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(ns)))) - 1
		i = max(0, min(i, len(ns)-1))
		return ms(ns[i])
	}
	return Latency{
		Count: len(ns),
		Mean:  sum / float64(len(ns)) / 1e6,
		P50:   rank(0.50),
		P95:   rank(0.95),
		P99:   rank(0.99),
		P999:  rank(0.999),
		Max:   ms(ns[len(ns)-1]),
		Min:   ms(ns[0]),
	}
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
